"""What deferring a job means: its new meta, when it comes back, what it waits for, or why it
fails instead. A pure function of the job's meta, the verdict and the config, so the caps and
clocks are tested without servers; the worker carries the plan out in one atomic move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace  # JobMeta (tasks/) is a dataclass

import msgspec

from easeoff.feedback.config import Config
from easeoff.feedback.levers.limits import slot_park_scopes
from easeoff.feedback.reasons import Reason, Verdict, joined
from easeoff.feedback.scopes import Scope
from easeoff.tasks.meta import JobMeta


class Deferral(msgspec.Struct, frozen=True):
    meta: JobMeta  # with this deferral counted and its clocks set
    due: float  # back to its queue at this time, unless it is parked past it
    park_on: tuple[str, ...]  # scopes whose release brings it back sooner
    unknown: tuple[str, ...]  # its resources the config lacks (recorded for operators)


class Expiry(msgspec.Struct, frozen=True):
    meta: JobMeta
    reason: str  # the failure's text
    kind: str  # the counter label: the first reason's `label`


def plan_deferral(meta: JobMeta, verdict: Verdict, config: Config, now: float) -> Deferral | Expiry:
    """Count the deferral and decide: defer until `due`, or fail past a cap.

    A resource the config does not declare (configs out of step during a deploy) fails closed,
    but only for `backoff.unknown_resource_grace`, not for max_age: nobody would release a job
    parked on it.
    """
    unknown = tuple(r for r in meta.resources if r not in config.resources)
    first = meta.first_deferred_at if meta.first_deferred_at is not None else now
    max_age = meta.max_deferral_age if meta.max_deferral_age is not None else config.backoff.max_age
    meta = replace(
        meta,
        deferrals=meta.deferrals + 1,
        last_reasons=verdict.texts,
        deferred_at=now,
        first_deferred_at=first,
        expires_at=first + max_age if max_age is not None else meta.expires_at,
        unknown_since=(meta.unknown_since if meta.unknown_since is not None else now) if unknown else None,
    )
    grace = config.backoff.unknown_resource_grace
    exceeded = cap_exceeded(meta, now, config.backoff.max_deferrals, config.backoff.max_age)
    if exceeded is None and unknown and meta.unknown_since is not None and now - meta.unknown_since >= grace:
        exceeded = f"resource {unknown[0]!r} is not in the config (still unknown after {grace:g}s)"
    if exceeded is not None:
        kind = verdict.reasons[0].label if verdict.reasons else "unknown"
        return Expiry(meta, f"easeoff: {exceeded}; last reasons: {joined(verdict.reasons)}", kind)
    due = now + verdict.delay
    if meta.expires_at is not None:
        due = min(due, meta.expires_at)  # back in time to be failed at its cap, not later
    if unknown and meta.unknown_since is not None:
        due = min(due, meta.unknown_since + grace)
    park_on = tuple(s for s in park_scopes(meta, verdict.reasons) if s not in unknown)
    return Deferral(meta, due, park_on, unknown)


def cap_exceeded(meta: JobMeta, now: float, max_deferrals: int | None, max_age: float | None) -> str | None:
    """Why a job may not be deferred again, or None. The task's own caps beat the defaults.

    `meta` counts this deferral: a cap of N allows N deferrals and fails the job at the next
    one; age counts from the first deferral.
    """
    limit = meta.max_deferrals if meta.max_deferrals is not None else max_deferrals
    if limit is not None and meta.deferrals > limit:
        return f"deferred {meta.deferrals - 1} times, the cap is {limit}"
    age_cap = meta.max_deferral_age if meta.max_deferral_age is not None else max_age
    waited = now - (meta.first_deferred_at if meta.first_deferred_at is not None else now)
    if age_cap is not None and waited > age_cap:
        return f"deferred for {waited:.0f}s, the cap is {age_cap:g}s"
    return None


def park_scopes(meta: JobMeta, reasons: Sequence[Reason]) -> list[str]:
    """What a deferred job waits for: its resources when they are strained or paused, its task's
    scope when ops paused the task, a slot when its limit is full. Throttling and shutdown say
    nothing about the database's health: the job just comes back when due. A job waiting for a
    slot also waits in its task's list for the scope, whence its task's turn takes it."""
    scopes: list[str] = []
    for reason in reasons:
        if reason.waits_for == "resources":
            scopes += meta.resources
        elif reason.waits_for == "task":
            scopes.append(str(Scope.task(meta.task)))
        else:
            scopes += slot_park_scopes(reason, meta.task)
    return list(dict.fromkeys(scopes))
