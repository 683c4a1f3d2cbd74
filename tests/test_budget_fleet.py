"""The budget controller on real Redis: stepped once per interval however many probers ask, its
level is the resource's limit, its duty cycle paces the next start after a release, and each
release counts the work done."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import msgspec
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.budget.controller_state import ControllerState, Why
from easeoff.feedback.budget.fleet import controller_state, step_budget
from easeoff.feedback.budget.measure import observe_budget
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling
from easeoff.feedback.config import Config, load_config
from easeoff.feedback.levers.limits import Leases, lease_scopes
from easeoff.feedback.reasons import Kind
from tests.conftest import TEST_REDIS_URL, wait_until
from tests.test_limit_step import at_start_of_an_interval

SCOPE = "shard:9"
BUDGETED = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".budget]
latency = "4ms"
"""


def budget_config(write_config: Callable[..., Path], interval: float = 1.0) -> Config:
    return load_config(write_config(interval=interval, extra=BUDGETED))


def observation(redis: Redis, value: float | None = 0.001, stale: bool = False) -> BudgetObservation:
    seconds, micros = redis.time()
    return BudgetObservation(
        SCOPE, seconds + micros / 1e6, (Ceiling("latency", value, 0.004),), 0.001, 1, 1.0, stale=stale
    )


def put_state(redis: Redis, state: ControllerState) -> None:
    redis.hset(keys.budget_key(SCOPE), "controller", msgspec.json.encode(state))


def test_two_probers_in_one_interval_step_once(redis_conn: Redis, write_config: Callable[..., Path]) -> None:
    config = budget_config(write_config, interval=1.0)
    observed = []
    written = []
    start = threading.Barrier(4)

    def prober() -> None:
        redis = Redis.from_url(TEST_REDIS_URL)
        start.wait(5)
        written.append(step_budget(redis, config, SCOPE, lambda: observed.append(1) or observation(redis)))
        redis.close()

    at_start_of_an_interval(redis_conn, 1.0)
    threads = [threading.Thread(target=prober) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(written) == 4
    assert sum(1 for w in written if w is not None) == 1
    assert redis_conn.hget(keys.budget_key(SCOPE), "version") == b"1"
    # The next interval steps again, once.
    wait_until(
        lambda: step_budget(redis_conn, config, SCOPE, lambda: observation(redis_conn)) is not None,
        3,
        what="a step in the next interval",
    )
    assert redis_conn.hget(keys.budget_key(SCOPE), "version") == b"2"


def test_the_limit_key_follows_the_level(redis_conn: Redis, write_config: Callable[..., Path]) -> None:
    config = budget_config(write_config, interval=0.05)
    leases = Leases(redis_conn, config)
    scopes = lease_scopes(config, [SCOPE])
    assert [s.paced for s in scopes] == [True]

    # A cold start with no baseline learns first: no new job starts at all.
    cold = BudgetObservation(SCOPE, 1.0, (Ceiling("latency", None, 0.004),), None, 0, 0.0)
    stepped = step_budget(redis_conn, config, SCOPE, lambda: cold)
    assert stepped is not None and stepped.decision.why == Why.LEARNING
    assert redis_conn.get(keys.limit_key(SCOPE)) == b"0"
    for reserve in (0, 1):  # normal and low priority alike
        refusal = leases.acquire(scopes, "a", reserve)
        assert refusal is not None and refusal.reason.kind in (Kind.CONCURRENCY, Kind.YIELD)

    # A level of 3.7 is three jobs at once.
    put_state(redis_conn, ControllerState(level=3.7, idle_until=0.0))
    stepped = wait_until(lambda: step_budget(redis_conn, config, SCOPE, lambda: observation(redis_conn)), 2)
    assert stepped.decision.level == 3.7  # measuring: it holds
    assert redis_conn.get(keys.limit_key(SCOPE)) == b"3" and redis_conn.get(keys.duty_key(SCOPE)) is None
    assert [leases.acquire(scopes, m) for m in "abc"] == [None, None, None]
    assert leases.acquire(scopes, "d") is not None

    # A breach cuts it at once, and the limit with it; below one job the duty cycle is written too.
    put_state(redis_conn, ControllerState(level=0.8, idle_until=0.0))
    stepped = wait_until(lambda: step_budget(redis_conn, config, SCOPE, lambda: observation(redis_conn, 0.005)), 2)
    assert stepped.decision.why == Why.CUT_BREACH and stepped.decision.level < 0.8
    assert redis_conn.get(keys.limit_key(SCOPE)) == b"1"
    assert float(redis_conn.get(keys.duty_key(SCOPE)) or 0) == stepped.decision.level


def test_a_stale_observation_holds(redis_conn: Redis, write_config: Callable[..., Path]) -> None:
    config = budget_config(write_config, interval=0.05)
    put_state(redis_conn, ControllerState(level=2.0, idle_until=0.0))
    for stale, value in ((True, 0.001), (False, None)):
        stepped = wait_until(
            lambda stale=stale, value=value: step_budget(
                redis_conn, config, SCOPE, lambda: observation(redis_conn, value, stale)
            ),
            2,
        )
        assert stepped.decision.why == Why.HOLD_STALE and stepped.decision.level == 2.0
        assert redis_conn.get(keys.limit_key(SCOPE)) == b"2"
    state = controller_state(redis_conn, SCOPE)
    assert state is not None and state.level == 2.0


def test_a_duty_cycle_paces_the_next_start_after_a_release_and_counts_the_work(
    redis_conn: Redis, write_config: Callable[..., Path]
) -> None:
    config = budget_config(write_config, interval=0.05)
    leases = Leases(redis_conn, config)
    scopes = lease_scopes(config, [SCOPE])
    put_state(redis_conn, ControllerState(level=0.5, idle_until=0.0))
    wait_until(lambda: step_budget(redis_conn, config, SCOPE, lambda: observation(redis_conn, 0.0039)), 2)
    assert float(redis_conn.get(keys.duty_key(SCOPE)) or 0) == 0.5

    assert leases.acquire(scopes, "job-1") is None
    started = _redis_now(redis_conn)
    wait_until(lambda: _redis_now(redis_conn) - started >= 0.4, 2, what="the job's run")
    with redis_conn.pipeline() as pipe:
        Leases.release(scopes, "job-1", pipe)
        pipe.execute()
    released = _redis_now(redis_conn)
    ran = released - started
    assert redis_conn.get(keys.work_key(SCOPE)) == b"1"
    assert redis_conn.get(keys.lease_started_key(SCOPE, "job-1")) is None

    # At a duty of 0.5 the pause equals the run: refused for the pace until then, with the wait.
    refusal = leases.acquire(scopes, "job-2")
    assert refusal is not None and refusal.reason.kind == Kind.PACE
    assert refusal.pace_wait is not None and 0 < refusal.pace_wait <= ran * 1.05
    assert refusal.pace_wait >= ran * 0.5  # most of the pause is still ahead
    assert redis_conn.zcard(keys.leases_key(SCOPE)) == 0
    admitted = wait_until(lambda: leases.acquire(scopes, "job-2") is None, ran + 2, what="the pace to pass")
    assert admitted and _redis_now(redis_conn) - released >= ran * 0.95

    # Another release counts once more; at one job at a time or more there is no pause.
    put_state(redis_conn, ControllerState(level=1.0, idle_until=0.0))
    wait_until(lambda: step_budget(redis_conn, config, SCOPE, lambda: observation(redis_conn, 0.0039)), 2)
    with redis_conn.pipeline() as pipe:
        Leases.release(scopes, "job-2", pipe)
        pipe.execute()
    assert redis_conn.get(keys.work_key(SCOPE)) == b"2"
    assert leases.acquire(scopes, "job-3") is None


def _redis_now(redis: Redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1e6


def test_with_the_real_measuring_side_a_cold_start_without_readings_stays_idle(
    redis_conn: Redis, write_config: Callable[..., Path]
) -> None:
    """No reading of the resource's host and no baseline: the controller idles (limit 0) and
    never grows on what it cannot read."""
    config = load_config(write_config(interval=0.05, extra=BUDGETED.replace('"4ms"', '"1.5x"')))
    seen = set()
    for _ in range(5):
        stepped = wait_until(
            lambda: step_budget(redis_conn, config, SCOPE, partial(observe_budget, redis_conn, config, SCOPE)), 2
        )
        seen.add(stepped.decision.why)
        assert redis_conn.get(keys.limit_key(SCOPE)) == b"0"
    assert seen == {Why.LEARNING}
