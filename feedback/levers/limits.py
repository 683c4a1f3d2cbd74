"""Concurrency limits: leases in Redis that cap heavy jobs per resource and per task.

A lease is a member of a sorted set scored by its expiry, so a worker that dies
simply stops renewing and its lease lapses within the lease TTL. A job refused a
slot waits parked (`slot:SCOPE`, or `slot-low:SCOPE` for low priority) rather than
being retried on a timer: whoever frees a slot hands it to the longest-waiting job,
and the prober hands out slots freed otherwise (lapsed leases, a raised limit) each
interval. Tasks that want the same scope share its slots by weight when it is tight (stride
scheduling, feedback/lua/share.lua; the rules in feedback/levers/shares.py), low priority last.
A resource's limit adapts AIMD-style (Netflix concurrency-limits): the worker that probes for the
fleet grows it by one per healthy interval in which it was saturated, and cuts it
multiplicatively on strain, between the configured min and max. Tasks may also
carry a static limit of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec
from redis import Redis

from easeoff.feedback import clock, keys, liveness
from easeoff.feedback.config import ConcurrencyConfig, Config, ResourceConfig
from easeoff.feedback.levers import shares
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.scopes import Scope

ACQUIRE = LuaScript.load(
    "easeoff.feedback",
    "acquire",
    argv=(
        "ttl",
        "member",
        "reserve",
        "gap",
        "grace",
        "started_prefix",
        "task",
        "weight",
        "parked_member",
        "slot_park_prefix",
        "class_park_prefix",
        "active",
        "forget",
        "handed_prefix",
    ),
    preludes=("fleet_clock", "share"),
)
RELEASE_PACE = LuaScript.load("easeoff.feedback", "release_pace", argv=(), preludes=("fleet_clock",))


class LeaseScope(msgspec.Struct, frozen=True):
    """One limited thing a job takes a slot of: `shard:3`, or `task:backfill`."""

    scope: str
    default_limit: int
    paced: bool = False  # a resource with a budget: its controller may pace it below one job at a time

    @property
    def leases_key(self) -> str:
        return keys.leases_key(self.scope)

    @property
    def limit_key(self) -> str:
        return keys.limit_key(self.scope)


# A paced start is handed to its waiting job this long before its time (release_slots.lua), and
# the worker that claims it waits the rest in place (`short_pace_wait`): handed at its very time, it
# would start only when promotion next looked and a worker next claimed, so that a budget's pace
# could never start jobs faster than those rounds, whatever duty it asked for.
PACE_LEAD = 1.0


class Claimant(msgspec.Struct, frozen=True):
    """Who asks for the slots: the job's task (its turn is shared by weight with the other tasks
    that want the scope) and where the job is parked while it waits (`job_id|queue`)."""

    task: str
    weight: float = 1.0
    parked_member: str = ""


class Refusal(msgspec.Struct, frozen=True):
    scope: str
    in_use: int
    limit: int
    low_priority: bool = False
    pace_wait: float | None = None  # refused for the scope's pace: seconds until its next start
    first: str | None = None  # refused for its task's turn: the task that goes first (low priority: normal work)

    @property
    def reason(self) -> Reason:
        """`pace` while a duty cycle holds the next start back; `yield` for low-priority work (it
        waits behind normal work for a slot); `share` while another task's turn comes first, else
        `concurrency`. Each waits parked for a slot under the scope: for pace, the job that ends
        hands one waiter the next start at its time (release_slots.lua), so the waiters do not all
        come back at once to be refused again, each refusal a deferral."""
        if self.pace_wait is not None:
            return Reason(Kind.PACE, self.scope, self.pace_wait, detail="duty cycle", waits_for="slot")
        if not self.low_priority:
            if self.first is not None:
                detail = f"{self.first} goes first (weights)"
                return Reason(Kind.SHARE, self.scope, self.in_use, self.limit, detail=detail, waits_for="slot")
            return Reason(Kind.CONCURRENCY, self.scope, self.in_use, self.limit, waits_for="slot")
        kept = self.in_use < self.limit and self.first is None
        why = "last slot kept for normal priority" if kept else "low priority waits behind normal"
        return Reason(Kind.YIELD, self.scope, self.in_use, self.limit, detail=why, waits_for="slot_low")


def slot_park_scope(reason: Reason) -> str | None:
    """The parked-job scope a job refused a slot waits in (`slot:shard:3`), if it waits for one."""
    if reason.waits_for == "slot":
        return keys.SLOT_PARK_PREFIX + reason.subject
    if reason.waits_for == "slot_low":
        return keys.SLOT_LOW_PARK_PREFIX + reason.subject
    return None


def slot_park_scopes(reason: Reason, task: str) -> list[str]:
    """Every parked-job scope a job of `task` refused a slot waits in: a normal-priority one waits
    for a slot (`slot:shard:3`) and for its task's turn at it (`slot-class:shard:3|backfill`)."""
    scope = slot_park_scope(reason)
    if scope is None:
        return []
    if reason.waits_for == "slot":
        return [scope, keys.slot_class_park_scope(reason.subject, task)]
    return [scope]


def default_limit(resource: ResourceConfig) -> int:
    """A resource's limit before one is written: its concurrency table's min, else one job."""
    return resource.concurrency.min if resource.concurrency is not None else 1


def lease_scopes(
    config: Config, resources: Iterable[str], task: str | None = None, task_limit: int | None = None
) -> list[LeaseScope]:
    scopes = []
    for name in resources:
        resource = config.resources.get(name)
        if resource is None:
            continue
        default = default_limit(resource)
        if resource.budget is not None:  # its limit and pace come from its budget's controller
            scopes.append(LeaseScope(name, default, paced=True))
        elif resource.concurrency is not None:
            scopes.append(LeaseScope(name, default))
    if task and task_limit:
        scopes.append(LeaseScope(str(Scope.task(task)), int(task_limit)))
    return scopes


def lease_ttl(config: Config) -> float:
    """A lease lives as long as its job: renewed with the job's beat, on the same terms (feedback/liveness.py)."""
    return liveness.owner_ttl(config)


class Leases:
    def __init__(self, redis: Redis, config: Config) -> None:
        self.redis = redis
        self.config = config
        self._acquire = ACQUIRE.register(redis)

    def acquire(
        self, scopes: Sequence[LeaseScope], member: str, reserve: int = 0, claimant: Claimant | None = None
    ) -> Refusal | None:
        """Take a slot in every scope, or none: returns the first full scope (or the first whose
        free slot is another task's turn), else None."""
        if not scopes:
            return None
        claimant = claimant or Claimant(task="")
        script_keys: list[str] = [keys.SLOT_WAITS, keys.FLEET_SEEN, keys.SWEEP_AFTER]
        pairs: list[object] = []
        for scope in scopes:
            script_keys += [scope.leases_key, scope.limit_key, keys.pace_key(scope.scope), keys.share_key(scope.scope)]
            pairs += [scope.scope, scope.default_limit, "1" if scope.paced else "0"]
        args = ACQUIRE.args(
            pairs,
            ttl=lease_ttl(self.config),
            member=member,
            reserve=reserve,
            gap=liveness.SILENCE_GAP,
            grace=liveness.GRACE,
            started_prefix=keys.LEASE_STARTED_PREFIX,
            task=claimant.task,
            weight=repr(float(claimant.weight)),
            parked_member=claimant.parked_member,
            slot_park_prefix=keys.PARKED_PREFIX + keys.SLOT_PARK_PREFIX,
            class_park_prefix=keys.PARKED_PREFIX + keys.SLOT_CLASS_PARK_PREFIX,
            active=shares.ACTIVE,
            forget=shares.FORGET,
            handed_prefix=keys.PACE_HANDED_PREFIX,
        )
        index, in_use, limit, wait, first = self._acquire(keys=script_keys, args=args)
        if int(index) == 0:
            return None
        pace_wait = float(wait) if wait not in (b"", "") else None
        first_text = first.decode() if isinstance(first, bytes) else str(first)
        return Refusal(
            scopes[int(index) - 1].scope, int(in_use), int(limit), reserve > 0, pace_wait, first_text or None
        )

    @staticmethod
    def release(scopes: Sequence[LeaseScope], member: str, pipeline: Redis) -> None:
        """Give the slots back, in the caller's transaction. A paced scope (one with a budget) also
        counts the work done and, below one job at a time, sets the pause before its next start:
        sent with EVAL in the same pipeline (a registered script would cost a SCRIPT EXISTS round
        trip on every job's ending)."""
        for scope in scopes:
            pipeline.zrem(scope.leases_key, member)
        paced = [scope.scope for scope in scopes if scope.paced]
        if paced:
            pace_keys = [
                k
                for name in paced
                for k in (
                    keys.lease_started_key(name, member),
                    keys.duty_key(name),
                    keys.pace_key(name),
                    keys.work_key(name),
                )
            ]
            pipeline.eval(RELEASE_PACE.text, len(pace_keys), *pace_keys)


ADAPT_LIMIT = LuaScript.load("easeoff.feedback", "adapt_limit", argv=("interval_ms",))
LIMIT_STEP_PREFIX = keys.NAMESPACE + "limit-step:"  # + scope: the probe interval its limit last stepped in


def aimd_step(limit: int, strained: bool, saturated: bool, cfg: ConcurrencyConfig) -> int:
    """Additive increase while healthy and fully used, multiplicative decrease on strain."""
    limit = max(cfg.min, min(cfg.max, limit))  # a config change may have moved the bounds
    if strained:
        return max(cfg.min, math.floor(limit * cfg.decrease))
    if saturated:
        return min(cfg.max, limit + 1)
    return limit


def adapt_limits(redis: Redis, config: Config, strained: Mapping[str, object]) -> dict[str, int]:
    """One AIMD step for every limited resource, once per probe interval fleet-wide: every
    worker that probes some host runs this, and the first in an interval (on Redis's clock)
    takes the step, in one script with the reads it is based on; the others get the limit in
    force. resource → its limit after this call.

    Saturated: every slot in use now, or jobs parked waiting for one: the prober may look just
    as its own job has handed its slot back."""
    limited = {
        name: r.concurrency for name, r in config.resources.items() if r.concurrency is not None and r.budget is None
    }  # a resource with a budget takes its limit from the budget's controller (feedback/budget/fleet.py)
    if not limited:
        return {}
    script_keys: list[str] = []
    tail: list[object] = []
    for name, cfg in limited.items():
        script_keys += [
            keys.limit_key(name),
            keys.leases_key(name),
            keys.PARKED_PREFIX + keys.SLOT_PARK_PREFIX + name,
            LIMIT_STEP_PREFIX + name,
        ]
        tail += [cfg.min, cfg.max, repr(float(cfg.decrease)), "1" if name in strained else "0"]
    interval_ms = max(int(config.probe_interval * 1000), 1)
    args = ADAPT_LIMIT.args(tail, interval_ms=interval_ms)
    limits = ADAPT_LIMIT.register(redis)(keys=script_keys, args=args)
    return {name: int(limit) for name, limit in zip(limited, limits, strict=True)}


def current_limits(redis: Redis, config: Config, now: float | None = None) -> dict[str, tuple[int, int]]:
    """resource → (limit, leases in use), for status and the exporter: every limited resource,
    whether its limit comes from a concurrency table (AIMD) or from its budget's controller."""
    limited = {name: r for name, r in config.resources.items() if r.concurrency is not None or r.budget is not None}
    now = clock.now() if now is None else now
    names = list(limited)
    if not names:
        return {}
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(keys.limit_key(name))
            pipe.zcount(keys.leases_key(name), now, "+inf")
        raw = pipe.execute()
    result = {}
    for i, name in enumerate(names):
        written = raw[2 * i]
        result[name] = (int(written) if written is not None else default_limit(limited[name]), int(raw[2 * i + 1]))
    return result


def short_pace_wait(reasons: Sequence[Reason]) -> float | None:
    """The seconds to wait in place when the only refusal is a paced start due within PACE_LEAD
    (its job was handed the start ahead of its time); None when the job should be deferred."""
    if len(reasons) != 1 or reasons[0].kind != Kind.PACE or reasons[0].value is None:
        return None
    wait = reasons[0].value
    return wait if 0.0 <= wait <= PACE_LEAD * 1.25 else None
