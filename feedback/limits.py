"""Concurrency limits: leases in Redis that cap heavy jobs per resource and per task.

A lease is a member of a sorted set scored by its expiry, so a worker that dies
simply stops renewing and its lease lapses within the lease TTL. A job refused a
slot waits parked (`slot:SCOPE`, or `slot-low:SCOPE` for low priority) rather than
being retried on a timer: whoever frees a slot hands it to the longest-waiting job,
and the prober hands out slots freed otherwise (lapsed leases, a raised limit) each
interval. A resource's limit adapts AIMD-style (Netflix concurrency-limits): the worker that probes for the
fleet grows it by one per healthy interval in which it was saturated, and cuts it
multiplicatively on strain, between the configured min and max. Tasks may also
carry a static limit of their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from redis import Redis

from easeoff.feedback.config import ConcurrencyConfig, Config

LEASES_KEY = "easeoff:leases:{scope}"
LIMIT_KEY = "easeoff:limit:{scope}"
SLOT_WAITS_KEY = "easeoff:slot-waits"  # scope -> its default limit, for each scope that has refused a slot
SLOT_PARK, SLOT_PARK_LOW = "slot:", "slot-low:"

ACQUIRE = """
-- KEYS: the slot-waits hash, then lease set and limit key in pairs
-- ARGV: now, lease expiry, member, reserve, then each pair's scope and default limit
local now, expiry, member, reserve = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
for i = 2, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local scope, default = ARGV[4 + i - 1], ARGV[4 + i]
  local limit = tonumber(redis.call('GET', KEYS[i + 1]) or default)
  local in_use = redis.call('ZCARD', KEYS[i])
  local keep_free = math.min(reserve, limit - 1)
  if in_use + keep_free >= limit then
    redis.call('HSET', KEYS[1], scope, default)  -- the refused job will wait on this scope
    return {i / 2, in_use, limit}
  end
end
for i = 2, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], expiry, member)
end
return {0, 0, 0}
"""


@dataclass(frozen=True)
class LeaseScope:
    """One limited thing a job takes a slot of: `shard:3`, or `task:backfill`."""

    scope: str
    default_limit: int

    @property
    def leases_key(self) -> str:
        return LEASES_KEY.format(scope=self.scope)

    @property
    def limit_key(self) -> str:
        return LIMIT_KEY.format(scope=self.scope)


@dataclass(frozen=True)
class Refusal:
    scope: str
    in_use: int
    limit: int
    low_priority: bool = False

    @property
    def reason(self) -> str:
        """`yield:` for low-priority work (it waits behind normal work for a slot), else `concurrency:`."""
        if not self.low_priority:
            return f"concurrency:{self.scope} {self.in_use}/{self.limit} in use"
        if self.in_use < self.limit:
            return f"yield:{self.scope} {self.in_use}/{self.limit} in use, last slot kept for normal priority"
        return f"yield:{self.scope} {self.in_use}/{self.limit} in use, low priority waits behind normal"


def waiting_scope(reason: str) -> str | None:
    """The parked-job scope a refusal's reason (see `Refusal.reason`) puts its job in, if any."""
    head = reason.split(" ", 1)[0]
    for kind, park in (("concurrency:", SLOT_PARK), ("yield:", SLOT_PARK_LOW)):
        if head.startswith(kind):
            return park + head[len(kind) :]
    return None


def lease_scopes(
    config: Config, resources: Iterable[str], task: str | None = None, task_limit: int | None = None
) -> list[LeaseScope]:
    scopes = []
    for name in resources:
        resource = config.resources.get(name)
        if resource is not None and resource.concurrency is not None:
            scopes.append(LeaseScope(name, resource.concurrency.min))
    if task and task_limit:
        scopes.append(LeaseScope(f"task:{task}", int(task_limit)))
    return scopes


def lease_ttl(config: Config) -> float:
    return max(3 * config.probe_interval, 5.0)


class Leases:
    def __init__(self, redis: Redis, config: Config) -> None:
        self.redis = redis
        self.config = config
        self._acquire = redis.register_script(ACQUIRE)

    def acquire(self, scopes: Sequence[LeaseScope], member: str, reserve: int = 0) -> Refusal | None:
        """Take a slot in every scope, or none: returns the first full scope, else None."""
        if not scopes:
            return None
        now = time.time()
        keys: list[str] = [SLOT_WAITS_KEY]
        args: list[object] = [repr(now), repr(now + lease_ttl(self.config)), member, reserve]
        for scope in scopes:
            keys += [scope.leases_key, scope.limit_key]
            args += [scope.scope, scope.default_limit]
        index, in_use, limit = (int(x) for x in self._acquire(keys=keys, args=args))
        if index == 0:
            return None
        return Refusal(scopes[index - 1].scope, in_use, limit, low_priority=reserve > 0)

    def renew(self, scopes: Sequence[LeaseScope], member: str, pipeline: Redis | None = None) -> None:
        target = pipeline if pipeline is not None else self.redis
        expiry = time.time() + lease_ttl(self.config)
        for scope in scopes:
            target.zadd(scope.leases_key, {member: expiry}, xx=True)

    @staticmethod
    def release(scopes: Sequence[LeaseScope], member: str, pipeline: Redis) -> None:
        for scope in scopes:
            pipeline.zrem(scope.leases_key, member)


def aimd_step(limit: int, strained: bool, saturated: bool, cfg: ConcurrencyConfig) -> int:
    """Additive increase while healthy and fully used, multiplicative decrease on strain."""
    limit = max(cfg.min, min(cfg.max, limit))  # a config change may have moved the bounds
    if strained:
        return max(cfg.min, math.floor(limit * cfg.decrease))
    if saturated:
        return min(cfg.max, limit + 1)
    return limit


def adapt_limits(
    redis: Redis, config: Config, strained: Mapping[str, object], now: float | None = None
) -> dict[str, int]:
    """One AIMD step for every limited resource; run by the worker that probed for the fleet."""
    new_limits = {}
    for name, (limit, in_use) in current_limits(redis, config, now).items():
        cfg = config.resources[name].concurrency
        assert cfg is not None
        new_limits[name] = aimd_step(limit, name in strained, in_use >= limit, cfg)
    if new_limits:
        with redis.pipeline(transaction=False) as pipe:
            for name, limit in new_limits.items():
                pipe.set(LIMIT_KEY.format(scope=name), limit)
            pipe.execute()
    return new_limits


def current_limits(redis: Redis, config: Config, now: float | None = None) -> dict[str, tuple[int, int]]:
    """resource → (limit, leases in use), for status and the exporter."""
    limited = {name: r.concurrency for name, r in config.resources.items() if r.concurrency is not None}
    now = time.time() if now is None else now
    names = list(limited)
    if not names:
        return {}
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(LIMIT_KEY.format(scope=name))
            pipe.zcount(LEASES_KEY.format(scope=name), now, "+inf")
        raw = pipe.execute()
    result = {}
    for i, name in enumerate(names):
        cfg = limited[name]
        assert cfg is not None
        result[name] = (int(raw[2 * i]) if raw[2 * i] is not None else cfg.min, int(raw[2 * i + 1]))
    return result
