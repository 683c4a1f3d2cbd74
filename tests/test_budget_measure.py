"""observe_budget on real Redis: the observation built from stored readings, leases and the work
counter; the idle baseline learned only while nothing heavy runs on the resource, and stepped
once per interval however many callers ask."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis

from easeoff.feedback import clock, keys
from easeoff.feedback.budget.measure import observe_budget
from easeoff.feedback.config import BudgetConfig, Config, parse_config
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY
from easeoff.feedback.signals.live_latency import live_key
from easeoff.feedback.signals.readings import Reading
from tests.conftest import TEST_REDIS_URL, stays_true, ticks, wait_until

R = "shard:1"


def config_for(budget: str, interval: float = 0.1) -> Config:
    text = f"""
[probe]
interval = {interval}
stale_after = 2
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.db2]
url = "mysql://root@127.0.0.1:3306"
[resources."{R}"]
primary = "db1"
replicas = ["db2"]
[resources."{R}".budget]
{budget}
[resources."shard:2"]
hosts = ["db1"]
[queues.budgeted]
resources = ["{R}"]
[queues.other]
"""
    return parse_config(text, "test.toml", {})


def store(
    redis: Redis,
    host: str,
    values: dict[str, float],
    age: float = 0.0,
    error: str | None = None,
    live: float | None = None,
    spec: BudgetConfig | None = None,
) -> None:
    """A reading of `host`: its signals' `values`, and the `live` latency its probe keeps for `spec`."""
    counters = {live_key(spec): live} if live is not None and spec is not None else {}
    reading = Reading(host=host, taken_at=clock.now() - age, values=values, error=error, counters=counters)
    redis.set(keys.reading_key(host), reading.to_json())


def hold_lease(redis: Redis, member: str = "exec-1") -> None:
    redis.zadd(keys.leases_key(R), {member: clock.now() + 60})


def state(redis: Redis) -> dict[str, float]:
    """The measuring side's fields of the budget hash (the controller keeps its own there too)."""
    fields = ("observed", "baseline", "learned_ms")
    return {f: float(v) for f, v in zip(fields, redis.hmget(keys.budget_key(R), fields), strict=True) if v is not None}


def test_observation_from_readings_leases_and_the_work_counter(redis_conn: Redis) -> None:
    clock.follow(redis_conn)
    config = config_for('latency = "4ms"\nlag = "5s"\nhistory_list_length = 1000', interval=0.2)
    spec = config.resources[R].budget
    assert spec is not None
    store(redis_conn, "db1", {"history_list_length": 500}, live=0.003, spec=spec)
    store(redis_conn, "db2", {"lag": 2.0, "history_list_length": 100}, live=0.001, spec=spec)
    first = observe_budget(redis_conn, config, R)
    assert first is not None and first.work_done == 0  # the first step only notes the counter
    hold_lease(redis_conn)
    redis_conn.incrby(keys.work_key(R), 3)

    def next_step():  # type: ignore[no-untyped-def]
        seen = observe_budget(redis_conn, config, R)
        return seen if seen is not None and seen.work_done > 0 else None

    seen = wait_until(next_step, 5, interval=0.02, what="the next interval's step")
    assert seen.resource == R and not seen.stale and seen.unreadable == ()  # type: ignore[attr-defined]
    assert [(c.name, c.value, c.limit) for c in seen.ceilings] == [  # type: ignore[attr-defined]
        ("latency", 0.003, 0.004),
        ("lag", 2.0, 5.0),
        ("history_list_length", 500.0, 1000.0),
    ]
    assert seen.slack == pytest.approx(0.25)  # type: ignore[attr-defined]
    assert (seen.running, seen.work_done, seen.baseline) == (1, 3.0, None)  # type: ignore[attr-defined]
    assert abs(seen.at - clock.now()) < 1.0  # type: ignore[attr-defined]

    # A stale replica reading: its lag is unreadable, the observation stale, and it says why.
    store(redis_conn, "db2", {"lag": 2.0, "history_list_length": 100}, age=3.0, live=0.001, spec=spec)
    stale = observe_budget(redis_conn, config, R)
    assert stale is not None and stale.stale and stale.slack is None
    assert [c.value for c in stale.ceilings] == [None, None, None]
    assert any("db2: reading 3.0s old" in why for why in stale.unreadable), stale.unreadable
    # A host ops took out is not the live site: the primary alone answers for latency and backlog.
    redis_conn.set(HOSTS_OUT_KEY, '{"db2": "maintenance"}')
    out = observe_budget(redis_conn, config, R)
    assert out is not None and [c.value for c in out.ceilings] == [0.003, None, 500.0]
    assert "lag: no host in production to read it from" in out.unreadable
    redis_conn.delete(HOSTS_OUT_KEY)
    # A window too small for the quantile leaves the latency out of the reading: unreadable.
    store(redis_conn, "db1", {"history_list_length": 500})
    store(redis_conn, "db2", {"lag": 2.0, "history_list_length": 100}, live=0.001, spec=spec)
    thin = observe_budget(redis_conn, config, R)
    assert thin is not None and thin.stale and thin.ceilings[0].value is None
    assert observe_budget(redis_conn, config, "shard:2") is None  # no budget


def test_baseline_is_learned_only_while_nothing_heavy_runs(redis_conn: Redis) -> None:
    clock.follow(redis_conn)
    config = config_for('latency = "1.5x"\nwindow = 0.5', interval=0.1)  # warm-up: 1.5 s of idle
    spec = config.resources[R].budget
    assert spec is not None

    def live(seconds: float) -> None:
        for host in ("db1", "db2"):
            store(redis_conn, host, {}, live=seconds, spec=spec)

    def observe():  # type: ignore[no-untyped-def]
        seen = observe_budget(redis_conn, config, R)
        assert seen is not None
        return seen

    live(0.002)
    hold_lease(redis_conn)  # a heavy job runs: nothing is learned, however long
    for _ in ticks(2.5, 0.03):
        live(0.002)
        seen = observe()
        assert seen.baseline is None and seen.stale
        assert seen.unreadable == ("latency: no idle baseline learned yet",)
    assert "baseline" not in state(redis_conn)

    redis_conn.delete(keys.leases_key(R))  # quiet: a window and an interval later it learns ...
    # ... though a job claimed and parked for a slot sits in rq's started registry: it runs nothing.
    redis_conn.zadd("rq:wip:budgeted", {"job-1": clock.now() + 600})

    def learned():  # type: ignore[no-untyped-def]
        live(0.002)
        return observe().baseline

    baseline = wait_until(learned, 10, interval=0.03, what="the first baseline")
    assert baseline == pytest.approx(0.002)
    seen = observe()
    assert [(c.value, c.limit) for c in seen.ceilings] == [(0.002, pytest.approx(0.003))] and not seen.stale

    # Heavy work again, and the live site slows: the baseline does not move.
    for why in ("lease", "paced", "work"):
        if why == "lease":
            hold_lease(redis_conn)
        elif why == "paced":  # between two paced jobs: a gap of the duty cycle, not the site at rest
            redis_conn.set(keys.duty_key(R), "0.2")

        def unmoved(why: str = why) -> bool:
            if why == "work":  # short jobs, each starting and ending between two steps: only the counter sees them
                redis_conn.incr(keys.work_key(R))
            live(0.02)
            return observe().baseline == baseline

        stays_true(unmoved, 1.5, interval=0.03, what=f"baseline unmoved ({why})")
        redis_conn.delete(keys.leases_key(R), keys.duty_key(R))
    assert state(redis_conn)["baseline"] == baseline

    def follows():  # type: ignore[no-untyped-def]
        live(0.02)
        return (value := observe().baseline) is not None and value > baseline and value

    learned = state(redis_conn)["learned_ms"]
    moved = wait_until(follows, 5, interval=0.03, what="quiet again: the baseline to learn from the slower site")
    # The first idle step after the heavy work weighs at most one window against all the idle
    # time learned before it, not the seconds of heavy work since: no jump to 20 ms.
    assert moved <= (baseline * learned + 0.02 * 500) / (learned + 500) * 1.01, (moved, learned)


def test_the_step_is_taken_once_per_interval_however_many_ask(redis_conn: Redis) -> None:
    clock.follow(redis_conn)
    interval = 0.25
    config = config_for('latency = "1.5x"\nwindow = 0.25', interval=interval)
    spec = config.resources[R].budget
    assert spec is not None
    for host in ("db1", "db2"):
        store(redis_conn, host, {}, live=0.002, spec=spec)
    observe_budget(redis_conn, config, R)  # the counter noted
    redis_conn.incrby(keys.work_key(R), 5)
    seen: list[tuple[int, float]] = []  # (Redis's interval, work done) as each caller saw it
    lock = threading.Lock()
    began = time.monotonic()

    def caller() -> None:
        redis = Redis.from_url(TEST_REDIS_URL)
        for _ in ticks(3.0, 0.01):
            for host in ("db1", "db2"):
                store(redis, host, {}, live=0.002, spec=spec)
            found = observe_budget(redis, config, R)
            assert found is not None
            with lock:
                seen.append((round(found.at * 1e6) // 1000 // int(interval * 1000), found.work_done))
        redis.close()

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    elapsed = time.monotonic() - began
    by_interval: dict[int, set[float]] = {}
    for at, done in seen:
        by_interval.setdefault(at, set()).add(done)
    assert len(seen) > 3 * len(by_interval)  # every interval was asked about several times
    assert all(len(done) == 1 for done in by_interval.values()), by_interval  # one step, one answer
    assert sum(next(iter(done)) for done in by_interval.values()) == 5  # the work counted once
    # Learned once per interval, not once per caller: the idle time learned is no more than the time spent.
    assert state(redis_conn)["learned_ms"] <= (elapsed + interval) * 1000


def test_a_relearn_forgets_the_baseline_and_learns_the_site_as_it_is_now(redis_conn: Redis) -> None:
    """The controller could not meet the budget at its floor and flagged `relearn`
    (budget_step.lua): the next step forgets the baseline, and what is learned then is the live
    site as it is now, not blended into hours of the old one."""
    clock.follow(redis_conn)
    config = config_for('latency = "1.5x"\nwindow = 0.5', interval=0.1)
    spec = config.resources[R].budget
    assert spec is not None

    def observed(seconds: float):  # type: ignore[no-untyped-def]
        for host in ("db1", "db2"):
            store(redis_conn, host, {}, live=seconds, spec=spec)
        seen = observe_budget(redis_conn, config, R)
        assert seen is not None
        return seen.baseline

    assert wait_until(lambda: observed(0.002), 10, interval=0.03, what="the first baseline") == pytest.approx(0.002)
    redis_conn.hset(keys.budget_key(R), "relearn", "1")
    assert wait_until(lambda: observed(0.004) is None, 2, interval=0.03, what="the baseline forgotten")
    assert "relearn" not in state(redis_conn)
    relearned = wait_until(lambda: observed(0.004), 10, interval=0.03, what="a baseline learned afresh")
    assert relearned == pytest.approx(0.004)  # the old 2 ms weighs nothing in it
