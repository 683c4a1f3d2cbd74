"""The fleet's wake-up word (`keys.WAKE`, pub/sub): idle and held workers sleep until told,
rather than poll every interval.

Probers publish it from the store script when a reading changes a verdict; whoever puts jobs
back into a queue, or the first job into an empty one, publishes it here; every switch and
host change publishes it in its own transaction (feedback/levers/).
"""

from __future__ import annotations

from redis import Redis

from easeoff.feedback import keys


def announce_jobs(redis: Redis) -> None:
    """Jobs are in a queue that idle workers may have seen empty: look now, not at the next poll."""
    redis.publish(keys.WAKE, "jobs")
