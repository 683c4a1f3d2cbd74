"""One clock for the fleet: Redis's.

A reading carries the time it was taken, a deferred job the time it is due, a lease, a
cool-down or a switch the time it ends; each is written by one process and read by others,
on other machines. Against each machine's own clock, a worker 5 s ahead would call every
fresh reading stale (and stop) and run deferred jobs early; one 5 s behind would trust
stale readings and hold jobs late. So each process keeps its offset from Redis's TIME
(half the round trip taken off, measured again every RESYNC_EVERY seconds) and reads the
fleet's time as its own plus that offset. The Redis a process last connected to
(feedback/connect.py) is the one it follows. Durations inside one process still use the
monotonic clock.
"""

from __future__ import annotations

import math
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

RESYNC_EVERY = 30.0  # seconds; clocks drift by far less than a probe interval in that time
RETRY_AFTER = 5.0  # seconds after a failed measurement (Redis away) before the next try

_lock = threading.Lock()
_source: Redis | None = None
_offset = 0.0  # Redis's time minus ours, in seconds
_next_sync = math.inf  # monotonic: when to measure again


def follow(redis: Redis) -> None:
    """Take this process's notion of now from `redis` (the Redis it connected to last), measured anew."""
    global _source, _next_sync
    with _lock:
        if _source is not redis:
            _source, _next_sync = redis, -math.inf


def follow_unless_following(redis: Redis) -> None:
    """Follow `redis` if this process follows no Redis yet (an app that made its own client
    rather than calling easeoff's `connect`); else keep the one it follows. Costs nothing after
    the first call: the offset is measured once, then every RESYNC_EVERY seconds."""
    global _source, _next_sync
    if _source is None:
        with _lock:
            if _source is None:
                _source, _next_sync = redis, -math.inf


def now() -> float:
    """The fleet's time, in Unix seconds."""
    if time.monotonic() >= _next_sync:
        _sync()
    return time.time() + _offset


def _sync() -> None:
    global _offset, _next_sync
    if _source is None or not _lock.acquire(blocking=False):
        return  # another thread is measuring; use the offset we have
    try:
        _next_sync = time.monotonic() + RETRY_AFTER  # a failure is retried later, not at every call
        sent = time.time()
        seconds, micros = _source.time()
        received = time.time()
        _offset = seconds + micros / 1e6 - (sent + received) / 2
        _next_sync = time.monotonic() + RESYNC_EVERY
    except RedisError:
        pass  # Redis is away: keep the last offset (clocks do not jump while it is)
    finally:
        _lock.release()
