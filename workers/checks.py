"""The admission pipeline: the checks a claimed job must pass, in order, before it runs.

As dramatiq's middleware list: each check answers None (go on) or a deferring `Verdict`,
and the first verdict wins. The order is declared in `admission_checks`: the database's
health first (read-only), what the policies in shadow would have said (counted, never
deferring), then ops' switches on the task, then the rates (which count a
start), then the concurrency slots, which take a lease and so come last; a check that counted
a start gives it back when a later one refuses the job. A new lever is one module in
feedback/levers/ (lever.py): its check runs here at the place it declares.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec
from redis import Redis
from rq import Queue
from rq.job import Job

from easeoff.feedback import clock, keys
from easeoff.feedback.config import Config, QueueConfig
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers.lever import (
    HEALTH,
    RATES,
    SHADOW,
    SLOTS,
    SWITCHES,
    Claim,
    LeverCheck,
    levers,
    settings_for,
)
from easeoff.feedback.levers.limits import Claimant, Leases, LeaseScope, lease_scopes
from easeoff.feedback.levers.rates import RateLimiter, RateScope, rate_scopes
from easeoff.feedback.rate import parse_rate
from easeoff.feedback.reasons import ADMIT, Kind, Reason, Verdict, joined
from easeoff.feedback.signals.demand import Wants
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import shadow_tally
from easeoff.feedback.verdict.backoff import deferral_delay
from easeoff.feedback.verdict.gate import dormant_reasons, judge, task_reasons
from easeoff.feedback.verdict.shadow import ShadowJudge
from easeoff.tasks.meta import JobMeta
from easeoff.workers.logs import job_extra

SLOT_RECHECK = 300.0  # a job waiting for a slot is handed one; were that lost, it retries after this
SHADOW_LOG_EVERY = 10.0  # seconds between a resource's shadow lines in the worker's log


class Candidate(msgspec.Struct):
    """One claimed job, as the checks see it; the lease check records the slots it took."""

    job: Job
    meta: JobMeta
    queue: Queue
    lease_member: str  # the claim's execution, the member of every lease the job takes
    snapshot: Snapshot
    now: float
    lease: tuple[list[LeaseScope], str] | None = None


class Check(Protocol):
    def __call__(self, candidate: Candidate) -> Verdict | None: ...


@runtime_checkable
class GivesBackCheck(Check, Protocol):
    def give_back(self, candidate: Candidate) -> None:
        """A later check refused the job: undo what this one counted for it (a start)."""


class ResourceHealth(msgspec.Struct, frozen=True):
    """The databases the job and its queue touch: strained, failing or unknown resources defer it.

    Asking is also wanting (feedback/signals/demand.py): the check keeps the resources' hosts
    probed at full pace, and a job whose hosts were read at the dormant pace wakes their
    prober and waits for one fresh reading, never admitted on the slowed one."""

    config: Config
    rng: random.Random
    wants: Wants | None = None

    def __call__(self, candidate: Candidate) -> Verdict | None:
        resources = [*candidate.meta.resources, *self.config.queue_resources(candidate.queue.name)]
        hosts = self.config.hosts_for(resources)
        if self.wants is not None:
            self._follow_demand(candidate, resources, hosts)
        verdict = judge(resources, candidate.snapshot, self.config, candidate.now, candidate.meta.deferrals, self.rng)
        dormant = dormant_reasons(hosts, candidate.snapshot, self.config, candidate.now)
        if dormant:  # no fresh probe came in time: fail closed
            backoff = self.config.backoff
            delay = verdict.delay or deferral_delay(
                candidate.meta.deferrals, backoff.base, backoff.cap, self.config.probe_interval, self.rng
            )
            return Verdict(admit=False, reasons=(*verdict.reasons, *dormant), delay=delay, critical=verdict.critical)
        return None if verdict.admit else verdict

    def _follow_demand(self, candidate: Candidate, resources: list[str], hosts: tuple[str, ...]) -> None:
        assert self.wants is not None
        slowed = [h for h in hosts if (r := candidate.snapshot.get(h)) is not None and r.dormant]
        self.wants.want(resources, wake=bool(slowed))
        if slowed:
            fresh = self.wants.await_fresh(slowed, candidate.snapshot.readings)
            readings = {**candidate.snapshot.readings, **fresh}
            candidate.snapshot = msgspec.structs.replace(candidate.snapshot, readings=readings)
            candidate.now = clock.now()


class ShadowPolicies(msgspec.Struct):
    """Policies under trial (`mode = "shadow"`, `threshold --shadow`): once the real gate admits a
    job, what would they have held it for? Counted and logged, never deferring: a shadow verdict
    holds nothing, and a lost count costs the job nothing."""

    config: Config
    redis: Redis
    log: logging.Logger
    judge: ShadowJudge = msgspec.field(default_factory=ShadowJudge)
    quiet_until: dict[str, tuple[float, int]] = msgspec.field(default_factory=dict)  # resource -> next log, jobs unsaid

    def __call__(self, candidate: Candidate) -> Verdict | None:
        resources = dict.fromkeys([*candidate.meta.resources, *self.config.queue_resources(candidate.queue.name)])
        held = {}
        for resource in resources:
            reasons = self.judge.would_defer([resource], candidate.snapshot, self.config, candidate.now)
            if reasons:
                held[resource] = reasons
        if held:
            with contextlib.suppress(*REDIS_UNREACHABLE):
                shadow_tally.record(self.redis, held, candidate.now)
            self._say(candidate, held)
        return None

    def _say(self, candidate: Candidate, held: dict[str, tuple[Reason, ...]]) -> None:
        """A line per resource at most every SHADOW_LOG_EVERY seconds, with the jobs left unsaid."""
        for resource, reasons in held.items():
            due, unsaid = self.quiet_until.get(resource, (0.0, 0))
            if candidate.now < due:
                self.quiet_until[resource] = (due, unsaid + 1)
                continue
            self.quiet_until[resource] = (candidate.now + SHADOW_LOG_EVERY, 0)
            more = f" (and {unsaid} more jobs since the last line)" if unsaid else ""
            why = joined(reasons)
            self.log.info(
                "shadow: would have deferred job %s (%s) on %s: %s%s",
                *(candidate.job.id, candidate.meta.task, resource, why, more),
                extra=job_extra(candidate.job.id, candidate.queue.name, candidate.meta.task or None, why, "shadow"),
            )


class TaskSwitches(msgspec.Struct, frozen=True):
    """Ops' pause or throttle of the job's task: a paused task's jobs park until it resumes; a
    throttled one's refused share comes back in about an interval."""

    config: Config
    rng: random.Random

    def __call__(self, candidate: Candidate) -> Verdict | None:
        reasons = task_reasons(candidate.meta.task, candidate.snapshot, candidate.now, self.rng)
        if not reasons:
            return None
        delay = self.config.probe_interval * self.rng.uniform(0.5, 1.5)
        return Verdict(admit=False, reasons=tuple(reasons), delay=delay)


class ConcurrencySlots(msgspec.Struct, frozen=True):
    """A slot under every concurrency limit the job falls under (its resources', its task's), when
    it is its task's turn among the tasks that want them (by weight). A job refused one gives back
    the rate start `rates` counted it (`admit`): it did not start."""

    config: Config
    leases: Leases

    def __call__(self, candidate: Candidate) -> Verdict | None:
        meta = candidate.meta
        scopes = lease_scopes(self.config, meta.resources, meta.task, meta.concurrency)
        queue_config = self.config.queues.get(candidate.queue.name, QueueConfig(candidate.queue.name))
        reserve = 1 if queue_config.priority == "low" else 0
        claimant = Claimant(meta.task, meta.weight, keys.parked_member(candidate.job.id, candidate.queue.name))
        refusal = self.leases.acquire(scopes, candidate.lease_member, reserve, claimant)
        if refusal is None:
            candidate.lease = (scopes, candidate.lease_member) if scopes else None
            return None
        # Saturation is not strain: the job waits parked for a slot (no backoff growth) and is
        # handed one when a slot frees, or, under a budget's pace, the next start at its time;
        # the long recheck is only a safety net.
        return Verdict(admit=False, reasons=(refusal.reason,), delay=SLOT_RECHECK)


class RateLimits(msgspec.Struct, frozen=True):
    """A start under every rate the job falls under (its resources', its task's): over the rate,
    the job waits for its reserved start, deferred once to that very time, not spun on. It
    comes after the checks that read only (a job held for strain spends no start), and before
    the slots, which take a lease: a job they refuse gives its start back (`give_back`). A
    start is counted under the claim (`lease_member`), so that is the start given back."""

    config: Config
    limiter: RateLimiter

    def __call__(self, candidate: Candidate) -> Verdict | None:
        scopes = self._scopes(candidate)
        if not scopes:
            return None
        at = self.limiter.reserve(scopes, candidate.job.id, candidate.now, start=candidate.lease_member)
        if at is None:
            return None
        wait = max(at - candidate.now, 0.0)
        binding = min(scopes, key=lambda s: s.rate.count / s.rate.per)
        reason = Reason(Kind.RATE, binding.name, value=wait, detail=str(binding.rate), waits_for="delay")
        return Verdict(admit=False, reasons=(reason,), delay=wait)

    def give_back(self, candidate: Candidate) -> None:
        """A later check refused the job: uncount the start this claim was counted (if any)."""
        self.limiter.give_back(self._scopes(candidate), candidate.lease_member)

    def _scopes(self, candidate: Candidate) -> list[RateScope]:
        meta = candidate.meta
        task_rate = parse_rate(meta.rate) if meta.rate else None
        return rate_scopes(self.config, meta.resources, meta.task, task_rate)


class LeverModuleCheck(msgspec.Struct, frozen=True):
    """A lever module's check (feedback/levers/lever.py), handed the claimed job as a `Claim`."""

    check: LeverCheck

    def __call__(self, candidate: Candidate) -> Verdict | None:
        return self.check(claim_of(candidate))

    def give_back(self, candidate: Candidate) -> None:
        self.check.give_back(claim_of(candidate))


def claim_of(candidate: Candidate) -> Claim:
    meta = candidate.meta
    return Claim(
        job_id=candidate.job.id,
        queue=candidate.queue.name,
        task=meta.task,
        resources=meta.resources,
        options=meta.lever_options,
        execution=candidate.lease_member,
        now=candidate.now,
    )


def admission_checks(
    config: Config, redis: Redis, leases: Leases, rng: random.Random, limiter: RateLimiter, log: logging.Logger
) -> list[Check]:
    """The checks in the order they run: the built-in ones at their places, each lever module's
    at its own (`order`)."""
    placed: list[tuple[int, Check]] = [
        (HEALTH, ResourceHealth(config, rng, Wants(redis, config))),
        (SHADOW, ShadowPolicies(config, redis, log)),
        (SWITCHES, TaskSwitches(config, rng)),
        (RATES, RateLimits(config, limiter)),
        (SLOTS, ConcurrencySlots(config, leases)),
    ]
    settings = settings_for(config)
    for lever in levers():
        placed.append((lever.order, LeverModuleCheck(lever.check(redis, settings.get(lever.name)))))
    return [check for _, check in sorted(placed, key=lambda pair: pair[0])]


def admit(checks: Sequence[Check], candidate: Candidate) -> Verdict:
    """Run the checks in order; the first that defers decides, and the checks before it give
    back what they counted for the job (it did not start)."""
    passed: list[Check] = []
    for check in checks:
        verdict = check(candidate)
        if verdict is not None:
            for earlier in reversed(passed):
                if isinstance(earlier, GivesBackCheck):
                    earlier.give_back(candidate)
            return verdict
        passed.append(check)
    return ADMIT
