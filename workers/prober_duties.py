"""What the worker that just probed for the fleet does next, once per interval, as named steps.

Readings are refreshed single-flight: one worker a probe interval. That worker then does the
fleet's housekeeping, in this order, each step one or a few atomic scripts (so workers may
race safely): adapt concurrency limits to strain (AIMD), spend the budgets (a controller's
level per budgeted resource), log verdict flips, publish cool-downs
and release the jobs parked on what cleared, prune lapsed switches, recover abandoned jobs,
promote due deferred jobs and free slots, and enqueue the periodic jobs whose tick came
(workers/scheduler.py). A new duty is one step in `STEPS`.

At a quarter-second interval a round comes four times a second, so a round sends Redis only
what changed since this process's last one (DutyMemory); what only needs seconds (abandoned
jobs, lapsed slot leases) runs every RECHECK seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable
from functools import partial
from typing import Protocol

import msgspec
from redis import Redis
from rq import Queue

from easeoff.feedback.budget.fleet import budgeted, step_budget
from easeoff.feedback.budget.measure import observe_budget
from easeoff.feedback.budget.observation import BudgetObservation
from easeoff.feedback.config import Config
from easeoff.feedback.levers import events
from easeoff.feedback.levers.limits import adapt_limits
from easeoff.feedback.levers.switches import paused_task_scopes, prune_expired
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally.flips import GLOBAL, record_flips
from easeoff.feedback.verdict.cooldown import CooldownPublisher, strained_resources
from easeoff.feedback.verdict.gate import global_findings
from easeoff.feedback.wake import announce_jobs
from easeoff.workers.moves import JobMoves
from easeoff.workers.scheduler import Scheduler

PROMOTE_RECHECK = 2.0  # seconds: promotion scans this often at least, whatever the hint says
RECHECK = 2.0  # seconds: the longest a step skipped because nothing changed waits to run anyway (safety nets)


class ObserveBudget(Protocol):
    """The measuring side of a budget: one resource's observation over the last interval, or None."""

    def __call__(self, redis: Redis, config: Config, resource: str) -> BudgetObservation | None: ...


class DutyMemory(msgspec.Struct):
    """What this process's last rounds did. Another prober may have changed the same state
    since (probers of other hosts do the same duties), so a step skipped because nothing
    changed here still runs at least every RECHECK seconds."""

    ran_at: dict[str, float] = msgspec.field(default_factory=dict)  # step → monotonic time it last ran
    sent: dict[str, Hashable] = msgspec.field(default_factory=dict)  # step → what it last sent
    ticks_seen: dict[str, int] = msgspec.field(default_factory=dict)  # schedule → next tick after one seen claimed

    def due(self, step: str, every: float = RECHECK) -> bool:
        """Whether `step` last ran `every` seconds ago or more; if so, it runs now."""
        now = time.monotonic()
        if now - self.ran_at.get(step, -math.inf) < every:
            return False
        self.ran_at[step] = now
        return True

    def differs(self, step: str, value: Hashable) -> bool:
        """Whether `value` differs from what `step` last recorded; it is recorded either way."""
        before, self.sent[step] = self.sent.get(step), value
        return before != value

    def run_next(self, step: str) -> None:
        """`step` is due at its next chance, whenever it last ran."""
        self.ran_at.pop(step, None)

    def changed(self, step: str, value: Hashable) -> bool:
        """Whether `step` would send something new (or is due its recheck); if so, it sends it now."""
        if self.sent.get(step) == value and not self.due(step):
            return False
        self.sent[step] = value
        self.ran_at[step] = time.monotonic()
        return True


class Round(msgspec.Struct, frozen=True):
    """One probe round's housekeeping: the fresh snapshot and what the steps work on."""

    redis: Redis
    config: Config
    moves: JobMoves
    snapshot: Snapshot
    now: float
    queues: list[Queue]  # every queue rq knows of: the prober works for the whole fleet
    log: logging.Logger
    worker: str
    strained: dict[str, list[Reason]]  # resource -> what holds it now (global traffic aside)
    memory: DutyMemory
    cooldowns: CooldownPublisher
    observe_budget: ObserveBudget | None = observe_budget  # None: no budget is stepped (tests of other duties)


def adapt_concurrency(r: Round) -> None:
    """Cut limits on database strain (not on ops' pauses), raise them when healthy and saturated."""
    limits = adapt_limits(r.redis, r.config, {name: why for name, why in r.strained.items() if not _only_paused(why)})
    if r.memory.differs("limits", tuple(sorted(limits.items()))):
        r.memory.run_next("release_slots")  # a raised limit frees slots: hand them out this round


def spend_budgets(r: Round) -> None:
    """Step each budget's controller (once per interval fleet-wide): its level becomes the
    resource's limit and pace. A decision with a new reason or level is logged at INFO and
    recorded as an event; the rest (holds while measuring, four a second) at DEBUG."""
    if r.observe_budget is None:
        return
    for name in budgeted(r.config):
        stepped = step_budget(r.redis, r.config, name, partial(r.observe_budget, r.redis, r.config, name))
        if stepped is None:
            continue
        decision = stepped.decision
        r.log.log(logging.INFO if stepped.news else logging.DEBUG, "budget %s: %s", name, decision.text)
        if stepped.news:
            events.record(r.redis, "budget", f"{name}: {decision.text}", why=str(decision.why), at=r.now)
        if r.memory.differs(f"budget:{name}", decision.concurrency):
            r.memory.run_next("release_slots")  # a raised limit frees slots: hand them out this round


def log_verdict_flips(r: Round) -> None:
    held = {**r.strained, GLOBAL: global_findings(r.snapshot, r.config, r.now)[0]}
    if r.memory.changed("flips", frozenset(scope for scope, why in held.items() if why)):
        record_flips(r.redis, held, [GLOBAL, *r.config.resources], r.now)


def publish_and_release(r: Round) -> None:
    """Strained resources and paused tasks cool down; parked jobs of scopes that cleared go back."""
    paused = paused_task_scopes(r.snapshot.switches, r.now)
    cooling = {**r.strained, **{scope: [why] for scope, why in paused.items()}}
    for scope in r.cooldowns.publish(cooling, r.snapshot.switches.task_scopes):
        released = r.moves.release(scope)
        if released:
            r.log.info("Worker %s: %s cleared; released %d parked jobs", r.worker, scope, released)
            announce_jobs(r.redis)


def prune_lapsed_switches(r: Round) -> None:
    if r.snapshot.switches.expired(r.now):
        for switch in prune_expired(r.redis, r.now):
            r.log.warning("Worker %s: switch expired: %s", r.worker, switch.describe())


def recover_abandoned(r: Round) -> None:
    """A job is abandoned after seconds of silence (ABANDON_GRACE): every RECHECK seconds is soon enough."""
    if r.memory.due("recover_abandoned"):
        recover_abandoned_jobs(r.moves, r.queues, r.log, r.worker)


def promote_due(r: Round) -> None:
    """A deferred job is promoted within an interval of its due time: the deferrals keep the
    earliest due time (keys.NEXT_DUE, read with the readings), so a round before it skips the
    scan, which still runs every PROMOTE_RECHECK seconds for jobs scheduled by others (plain
    rq's enqueue_in). Slots freed by a job's end are handed out in that job's own transaction;
    what remains (lapsed leases, raised limits) every RECHECK seconds, or at once after a limit was raised."""
    promoted = 0
    hinted = r.snapshot.next_due is not None and r.snapshot.next_due <= r.now
    if r.memory.due("promote", 0.0 if hinted else PROMOTE_RECHECK):
        promoted = r.moves.promote(r.queues)
    if r.memory.due("release_slots"):
        promoted += r.moves.release_slots() or 0
    if promoted:
        announce_jobs(r.redis)


def enqueue_periodic(r: Round) -> None:
    """Each schedule's tick is enqueued by whichever prober sees it due first, once (one
    WATCH/MULTI/EXEC per tick: workers/scheduler.py); between ticks this sends Redis nothing.
    Last of the steps: its job is on the queue for the claims that follow the round."""
    fire_schedules(r.redis, r.config, r.memory, r.log, r.now)


def fire_schedules(redis: Redis, config: Config, memory: DutyMemory, log: logging.Logger, now: float) -> None:
    """Also run by every worker between jobs (workers/gated_worker.py), so a prober killed at a
    tick is replaced at once: the ticks seen claimed, kept in `memory`, keep that free of Redis."""
    Scheduler(redis, config, log, seen=memory.ticks_seen).run(now)


def recover_abandoned_jobs(moves: JobMoves, queues: list[Queue], log: logging.Logger, worker: str) -> None:
    """Also run at rq's maintenance, before rq's own cleanup would fail every abandoned job."""
    recovered = moves.recover_abandoned(queues)
    if recovered:
        announce_jobs(moves.connection)
        log.warning("Worker %s: recovered %d abandoned jobs (their workers died mid-job)", worker, recovered)


def promote_due_jobs(moves: JobMoves, queues: list[Queue]) -> int:
    """Due deferred jobs back to their queues, and free slots (lapsed leases, raised limits) to
    jobs waiting for one. Deferral delays are at least an interval, so this grain is enough."""
    return moves.promote(queues) + (moves.release_slots() or 0)


STEPS: tuple[Callable[[Round], None], ...] = (
    adapt_concurrency,
    spend_budgets,
    log_verdict_flips,
    publish_and_release,
    prune_lapsed_switches,
    recover_abandoned,
    promote_due,
    enqueue_periodic,
)


def after_refresh(r: Round) -> None:
    for step in STEPS:
        step(r)


def fleet_round(
    redis: Redis,
    config: Config,
    moves: JobMoves,
    snapshot: Snapshot,
    queues: list[Queue],
    log: logging.Logger,
    worker: str,
    now: float,
    memory: DutyMemory,
    cooldowns: CooldownPublisher,
) -> Round:
    """A Round with the strained resources worked out once, for every step that needs them."""
    strained = strained_resources(config, snapshot, now)
    return Round(redis, config, moves, snapshot, now, queues, log, worker, strained, memory, cooldowns)


def _only_paused(reasons: list[Reason]) -> bool:
    """Held by ops alone, not by the database: no reason to cut its concurrency limit."""
    return all(r.kind == Kind.PAUSED for r in reasons)
