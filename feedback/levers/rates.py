"""Fleet-wide rate limits (rq issues #74 and #725; Sidekiq Enterprise's, Oban Pro's and BullMQ's
limiters): a resource (`[resources."shard:1"] rate = "600/min"`) or a task
(`@heavy_task(rate="120/min")`) allows at most so many job starts in any window.

One Lua script per claim records the job's start under every rate it falls under, or reserves
it a later one (feedback/lua/rate.lua: a sliding window of starts per scope, and the
reservations queued behind it). Only a job that starts spends a start: one then refused a slot
gives back the start its claim was counted (`give_back`), so the rate is not under-admitted
by jobs that only waited. A job over the rate is not spun on: it is deferred once, to
the time its reservation comes due, and starts then. A deferral is not a failure and spends
no retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.config import Config
from easeoff.feedback.keys import NAMESPACE
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.rate import Rate
from easeoff.feedback.scopes import Scope

RATE = LuaScript.load("easeoff.feedback", "rate", argv=("now", "member", "start"))
RATES_PREFIX = NAMESPACE + "rate:"  # + scope: zset claim -> when it started, within the window
RESERVED_PREFIX = NAMESPACE + "rate-reserved:"  # + scope: zset job id -> from when it may start


class RateScope(msgspec.Struct, frozen=True):
    name: str  # a resource, or `task:NAME`
    rate: Rate


def rate_scopes(
    config: Config, resources: Iterable[str], task: str = "", task_rate: Rate | None = None
) -> list[RateScope]:
    """The rates a job falls under: its resources' and its task's own."""
    scopes = []
    for name in resources:
        resource = config.resources.get(name)
        if resource is not None and resource.rate is not None:
            scopes.append(RateScope(name, resource.rate))
    if task and task_rate is not None:
        scopes.append(RateScope(str(Scope.task(task)), task_rate))
    return scopes


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._reserve = RATE.register(redis)

    def reserve(
        self, scopes: Sequence[RateScope], job_id: str, now: float | None = None, start: str | None = None
    ) -> float | None:
        """None if the job starts now (its start is counted, as `start`: the claim, by default
        the job), else when it may: a reservation kept for it, however often it is claimed before then."""
        now = clock.now() if now is None else now
        if not scopes:
            return None
        tail = [v for s in scopes for v in (s.rate.count, repr(s.rate.per))]
        keys = [key for s in scopes for key in (RATES_PREFIX + s.name, RESERVED_PREFIX + s.name)]
        args = RATE.args(tail, now=repr(now), member=job_id, start=start or job_id)
        started, at = self._reserve(keys=keys, args=args)
        return None if int(started) else float(at)

    def give_back(self, scopes: Sequence[RateScope], start: str) -> int:
        """Uncount a start a claim was counted but did not make (a later check refused the job):
        that claim's start alone, in every scope at once; a second call changes nothing.
        The starts given back (one per scope that had it)."""
        if not scopes:
            return 0
        with self.redis.pipeline(transaction=True) as pipe:
            for scope in scopes:
                pipe.zrem(RATES_PREFIX + scope.name, start)
            return sum(int(n) for n in pipe.execute())

    def waiting(self, scopes: Iterable[str]) -> dict[str, int]:
        """scope → jobs holding a reservation (waiting on the rate), for the exporter."""
        names = list(scopes)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(RESERVED_PREFIX + name)
            return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
