"""The queues there are: the configured ones and any other rq has seen (its set of queue keys)."""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis
from rq import Queue


def known_queue_names(redis: Redis, configured: Iterable[str]) -> list[str]:
    """Configured queues first, then any other queue rq has seen."""
    names = list(configured)
    prefix = Queue.redis_queue_namespace_prefix
    for key in sorted(redis.smembers(Queue.redis_queues_keys)):
        name = (key.decode() if isinstance(key, bytes) else key).removeprefix(prefix)
        if name not in names:
            names.append(name)
    return names
