"""Live traffic as the app sees it: a per-second request counter in Redis.

Apps call `count_request` once per request (one pipelined round trip); the probe
reads a sliding one-second rate, so heavy work waits while the site is busy.

Seconds are the fleet's (Redis's time, feedback/clock.py), not the app machine's: an app
whose clock is 30 s off would otherwise count into seconds the prober never reads, and the
site's traffic would look like none. The clock keeps an offset, so a request costs no extra
round trip (one TIME every RESYNC_EVERY seconds).
"""

from __future__ import annotations

from redis import Redis

from easeoff.feedback import clock, keys

COUNTER_KEY = keys.TRAFFIC
KEEP_SECONDS = 10


def count_request(redis: Redis, counter: str = "web", n: int = 1, now: float | None = None) -> None:
    """Count `n` requests of `counter` in the current second of the fleet's clock."""
    if now is None:
        clock.follow_unless_following(redis)  # an app's own client: its Redis is the fleet's clock
        now = clock.now()
    second = int(now)
    key = COUNTER_KEY.format(counter=counter, second=second)
    with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(key, n)
        pipe.expire(key, KEEP_SECONDS)
        pipe.execute()


def app_rate(redis: Redis, counter: str, now: float | None = None) -> float:
    """Requests per second over the last second: this second's count plus the unexpired
    share of the previous one (a sliding window, so a burst shows within a probe)."""
    now = clock.now() if now is None else now
    second = int(now)
    current, previous = redis.mget(
        COUNTER_KEY.format(counter=counter, second=second), COUNTER_KEY.format(counter=counter, second=second - 1)
    )
    elapsed = now - second
    return float(int(current or 0)) + float(int(previous or 0)) * (1.0 - elapsed)
