"""One clock for the fleet: Redis's.

A reading carries the time it was taken, a deferred job the time it is due, a lease, a
cool-down or a switch the time it ends; each is written by one process and read by others,
on other machines. Against each machine's own clock, a worker 5 s ahead would call every
fresh reading stale (and stop) and run deferred jobs early; one 5 s behind would trust
stale readings and hold jobs late. So each process keeps its offset from Redis's TIME
(half the round trip taken off, measured again every RESYNC_EVERY seconds) and reads the
fleet's time as its own plus that offset. The first Redis a process connects to
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

_lock = threading.Lock()
_source: Redis | None = None
_offset = 0.0  # Redis's time minus ours, in seconds
_synced_at = -math.inf  # monotonic
_measured = False


def follow(redis: Redis) -> None:
    """Take this process's notion of now from `redis`, unless it already follows one."""
    global _source
    with _lock:
        if _source is None:
            _source = redis


def now() -> float:
    """The fleet's time, in Unix seconds."""
    if _source is not None and time.monotonic() - _synced_at >= (RESYNC_EVERY if _measured else 1.0):
        _sync()
    return time.time() + _offset


def offset() -> float:
    """How far Redis's clock is ahead of this machine's, as last measured (for `easeoff status`)."""
    return _offset


def _sync() -> None:
    global _offset, _synced_at, _measured
    if not _lock.acquire(blocking=False):
        return  # another thread is measuring; use the offset we have
    try:
        _synced_at = time.monotonic()  # a failed measurement is retried later, not on every call
        assert _source is not None
        sent = time.time()
        seconds, micros = _source.time()
        received = time.time()
        _offset = seconds + micros / 1e6 - (sent + received) / 2
        _measured = True
    except RedisError:
        pass  # Redis is away: keep the last offset (clocks do not jump while it is)
    finally:
        _lock.release()
