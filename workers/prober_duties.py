"""What the worker that just probed for the fleet does next, once per interval, as named steps.

Readings are refreshed single-flight: one worker a probe interval. That worker then does the
fleet's housekeeping, in this order, each step one or a few atomic scripts (so workers may
race safely): adapt concurrency limits to strain (AIMD), log verdict flips, publish cool-downs
and release the jobs parked on what cleared, prune lapsed switches, recover abandoned jobs,
and promote due deferred jobs and free slots. A new duty is one step in `STEPS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from easeoff.feedback import keys
from easeoff.feedback.config import Config
from easeoff.feedback.levers.limits import adapt_limits
from easeoff.feedback.levers.switches import paused_task_scopes, prune_expired
from easeoff.feedback.observe.flips import GLOBAL, record_flips
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.cooldown import publish as publish_cooldowns
from easeoff.feedback.verdict.cooldown import strained_resources
from easeoff.feedback.verdict.gate import global_findings
from easeoff.workers.moves import JobMoves


@dataclass(frozen=True)
class Round:
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


def adapt_concurrency(r: Round) -> None:
    """Cut limits on database strain (not on ops' pauses), raise them when healthy and saturated."""
    adapt_limits(r.redis, r.config, {name: why for name, why in r.strained.items() if not _only_paused(why)})


def log_verdict_flips(r: Round) -> None:
    held = {**r.strained, GLOBAL: global_findings(r.snapshot, r.config, r.now)[0]}
    record_flips(r.redis, held, [GLOBAL, *r.config.resources], r.now)


def publish_and_release(r: Round) -> None:
    """Strained resources and paused tasks cool down; parked jobs of scopes that cleared go back."""
    paused = paused_task_scopes(r.snapshot.switches, r.now)
    cooling = {**r.strained, **{scope: [why] for scope, why in paused.items()}}
    for scope in publish_cooldowns(r.redis, r.config, cooling, r.snapshot.switches.task_scopes):
        released = r.moves.release(scope)
        if released:
            r.log.info("Worker %s: %s cleared; released %d parked jobs", r.worker, scope, released)
            wake_the_fleet(r.redis)


def prune_lapsed_switches(r: Round) -> None:
    if r.snapshot.switches.expired(r.now):
        for switch in prune_expired(r.redis, r.now):
            r.log.warning("Worker %s: switch expired: %s", r.worker, switch.describe())


def recover_abandoned(r: Round) -> None:
    recover_abandoned_jobs(r.moves, r.queues, r.log, r.worker)


def promote_due(r: Round) -> None:
    if promote_due_jobs(r.moves, r.queues):
        wake_the_fleet(r.redis)


def wake_the_fleet(redis: Redis) -> None:
    """Jobs are back in their queues: idle workers look now, not at their next poll."""
    redis.publish(keys.WAKE, "jobs")


def recover_abandoned_jobs(moves: JobMoves, queues: list[Queue], log: logging.Logger, worker: str) -> None:
    """Also run at rq's maintenance, before rq's own cleanup would fail every abandoned job."""
    recovered = moves.recover_abandoned(queues)
    if recovered:
        log.warning("Worker %s: recovered %d abandoned jobs (their workers died mid-job)", worker, recovered)


def promote_due_jobs(moves: JobMoves, queues: list[Queue]) -> int:
    """Due deferred jobs back to their queues, and free slots (lapsed leases, raised limits) to
    jobs waiting for one. Deferral delays are at least an interval, so this grain is enough."""
    return moves.promote(queues) + (moves.release_slots() or 0)


STEPS: tuple[Callable[[Round], None], ...] = (
    adapt_concurrency,
    log_verdict_flips,
    publish_and_release,
    prune_lapsed_switches,
    recover_abandoned,
    promote_due,
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
) -> Round:
    """A Round with the strained resources worked out once, for every step that needs them."""
    strained = strained_resources(config, snapshot, now)
    return Round(redis, config, moves, snapshot, now, queues, log, worker, strained)


def _only_paused(reasons: list[Reason]) -> bool:
    """Held by ops alone, not by the database: no reason to cut its concurrency limit."""
    return all(r.kind == Kind.PAUSED for r in reasons)
