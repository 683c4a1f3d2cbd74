"""The adaptive limit steps once per scope per probe interval, fleet-wide, however many probers
run the fleet's duties; and the step's Lua arithmetic is `aimd_step`'s."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.config import BackoffConfig, ConcurrencyConfig, Config, ResourceConfig, load_config
from easeoff.feedback.levers.limits import adapt_limits, aimd_step
from tests.conftest import TEST_REDIS_URL, wait_until

SCOPE = "shard:9"
LIMITED = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".concurrency]
min = 1
max = 32
"""
_names = itertools.count()


def limited_config(write_config: Callable[..., Path], interval: float) -> Config:
    return load_config(write_config(interval=interval, extra=LIMITED))


def redis_ms(redis: Redis) -> int:
    seconds, micros = redis.time()
    return seconds * 1000 + micros // 1000


def at_start_of_an_interval(redis: Redis, interval: float) -> None:
    """Wait until Redis's clock is early in a probe interval, so what follows fits inside one."""
    span = int(interval * 1000)
    wait_until(lambda: redis_ms(redis) % span < span * 0.4, interval + 1, what="the start of an interval")


def in_threads(config: Config, calls: int, strained: bool, threads: int = 4) -> list[int]:
    """`threads` probers at once, each adapting the limits `calls` times; the limits they saw."""
    seen: list[int] = []
    start = threading.Barrier(threads)

    def prober() -> None:
        redis = Redis.from_url(TEST_REDIS_URL)
        start.wait(5)
        for _ in range(calls):
            seen.append(adapt_limits(redis, config, {SCOPE: ["strain"]} if strained else {})[SCOPE])
        redis.close()

    running = [threading.Thread(target=prober) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=10)
    return seen


def test_four_probers_grow_a_saturated_limit_by_one_per_interval(redis_conn: Redis, write_config) -> None:
    config = limited_config(write_config, interval=5.0)
    redis_conn.set(keys.limit_key(SCOPE), 3)
    redis_conn.zadd(keys.PARKED_PREFIX + keys.SLOT_PARK_PREFIX + SCOPE, {"waiting|heavy": 1.0})  # saturated
    at_start_of_an_interval(redis_conn, 5.0)
    seen = in_threads(config, calls=4, strained=False)
    assert int(redis_conn.get(keys.limit_key(SCOPE)) or 0) == 4, seen
    assert seen == [4] * 16


def test_four_probers_cut_a_strained_limit_once_per_interval(redis_conn: Redis, write_config) -> None:
    config = limited_config(write_config, interval=5.0)
    redis_conn.set(keys.limit_key(SCOPE), 16)
    at_start_of_an_interval(redis_conn, 5.0)
    seen = in_threads(config, calls=4, strained=True)
    assert int(redis_conn.get(keys.limit_key(SCOPE)) or 0) == 8, seen
    assert seen == [8] * 16


def test_the_limit_steps_again_each_interval(redis_conn: Redis, write_config) -> None:
    """Two probers asking all the time grow the limit by one an interval: no more, and no less."""
    interval = 0.25
    config = limited_config(write_config, interval=interval)
    redis_conn.zadd(keys.PARKED_PREFIX + keys.SLOT_PARK_PREFIX + SCOPE, {"waiting|heavy": 1.0})
    at_start_of_an_interval(redis_conn, interval)
    first = redis_ms(redis_conn) // int(interval * 1000)
    stop = time.monotonic() + 1.6
    probers = [Redis.from_url(TEST_REDIS_URL) for _ in range(2)]

    def ask(redis: Redis) -> None:
        while time.monotonic() < stop:
            adapt_limits(redis, config, {})

    running = [threading.Thread(target=ask, args=(r,)) for r in probers]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=10)
    last = redis_ms(redis_conn) // int(interval * 1000)
    grown = int(redis_conn.get(keys.limit_key(SCOPE)) or 0) - 1  # from min
    assert last - first - 1 <= grown <= last - first + 1, (grown, first, last)
    for r in probers:
        r.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=80)),
    low=st.integers(min_value=1, max_value=8),
    span=st.integers(min_value=0, max_value=56),
    decrease=st.floats(min_value=0.01, max_value=0.99),
    strained=st.booleans(),
    saturated=st.booleans(),
)
def test_the_script_steps_as_aimd_step_does(
    redis_conn: Redis, limit: int | None, low: int, span: int, decrease: float, strained: bool, saturated: bool
) -> None:
    """The Lua step (run on real Redis, through adapt_limits) against the pure one, a fresh scope each."""
    cfg = ConcurrencyConfig(min=low, max=low + span, decrease=decrease)
    scope = f"shard:h{next(_names)}"
    config = Config(
        source="test",
        redis_url=TEST_REDIS_URL,
        probe_interval=0.5,
        probe_timeout=0.5,
        stale_after=5.0,
        backoff=BackoffConfig(),
        hosts={},
        resources={scope: ResourceConfig(scope, writers=("db1",), concurrency=cfg)},
        signals={},
        queues={},
    )
    if limit is not None:
        redis_conn.set(keys.limit_key(scope), limit)
    if saturated:  # a job waiting for a slot (no lease is in use: a limit of one or more is not full)
        redis_conn.zadd(keys.PARKED_PREFIX + keys.SLOT_PARK_PREFIX + scope, {"waiting|heavy": 1.0})
    got = adapt_limits(redis_conn, config, {scope: ["strain"]} if strained else {})
    expected = aimd_step(cfg.min if limit is None else limit, strained, saturated, cfg)
    assert got == {scope: expected}
    assert int(redis_conn.get(keys.limit_key(scope)) or 0) == expected
