"""How much work waits where, per queue: O(1) Redis reads, however deep the queue."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import msgspec.structs
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcparse

from easeoff.feedback import clock


class QueueStats(msgspec.Struct, frozen=True):
    name: str
    ready: int
    deferred: int
    running: int
    failed: int
    oldest_ready_age_s: float

    def as_dict(self) -> dict[str, float | int | str]:
        return msgspec.structs.asdict(self)


def queue_stats(redis: Redis, names: Iterable[str], now: float | None = None) -> list[QueueStats]:
    names = list(names)
    now = clock.now() if now is None else now
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + name)
            pipe.zcard(ScheduledJobRegistry(name, connection=redis).key)
            pipe.zcard(StartedJobRegistry(name, connection=redis).key)
            pipe.zcard(FailedJobRegistry(name, connection=redis).key)
            pipe.lindex(Queue.redis_queue_namespace_prefix + name, 0)
        counts = pipe.execute()
    heads = [counts[i * 5 + 4] for i in range(len(names))]
    with redis.pipeline(transaction=False) as pipe:
        for head in heads:
            pipe.hget(Job.key_for(head.decode()) if head else "easeoff:none", "enqueued_at")
        enqueued = pipe.execute()
    stats = []
    for i, name in enumerate(names):
        ready, deferred, running, failed, _ = counts[i * 5 : i * 5 + 5]
        age = 0.0
        if enqueued[i]:
            age = max(0.0, now - utcparse(enqueued[i].decode()).timestamp())
        stats.append(QueueStats(name, ready, deferred, running, failed, round(age, 3)))
    return stats
