"""Where is each job? A census of rq's places, to prove nothing is lost or duplicated."""

from __future__ import annotations

from collections import Counter

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry


def places(redis: Redis, queue_names: list[str]) -> dict[str, list[str]]:
    """job id → every place it is listed in (a healthy job has exactly one)."""
    found: dict[str, list[str]] = {}
    for name in queue_names:
        queue = Queue(name, connection=redis)
        listed = {
            "queue": [i.decode() for i in redis.lrange(queue.key, 0, -1)],
            "scheduled": [i.decode() for i in redis.zrange(ScheduledJobRegistry(name, connection=redis).key, 0, -1)],
            "started": [
                i.decode().split(":", 1)[0] for i in redis.zrange(StartedJobRegistry(name, connection=redis).key, 0, -1)
            ],
            "finished": [i.decode() for i in redis.zrange(FinishedJobRegistry(name, connection=redis).key, 0, -1)],
            "failed": [i.decode() for i in redis.zrange(FailedJobRegistry(name, connection=redis).key, 0, -1)],
            "intermediate": [i.decode() for i in redis.lrange(queue.intermediate_queue_key, 0, -1)],
        }
        for place, ids in listed.items():
            for job_id in ids:
                found.setdefault(job_id, []).append(f"{name}:{place}")
    return found


def misplaced(redis: Redis, queue_names: list[str], job_ids: list[str]) -> dict[str, list[str]]:
    """Jobs that are nowhere or in more than one place."""
    where = places(redis, queue_names)
    return {job_id: where.get(job_id, []) for job_id in job_ids if len(where.get(job_id, [])) != 1}


def census(redis: Redis, queue_names: list[str], job_ids: list[str]) -> Counter[str]:
    where = places(redis, queue_names)
    return Counter(where[j][0].split(":", 1)[1] if len(where.get(j, [])) == 1 else "misplaced" for j in job_ids)
