"""The history list on real Redis: what a sample holds, the bound, single-flight and reading back."""

from __future__ import annotations

import pytest
from redis import Redis

from easeoff.feedback.config import Config, load_config
from easeoff.feedback.observe.history import (
    HISTORY_KEY,
    MAX_SAMPLES,
    TICK_KEY,
    HistorySampler,
    Sample,
    append,
    keep_for,
    read_history,
)
from easeoff.feedback.signals.cache import READING_KEY
from easeoff.feedback.signals.readings import Reading
from easeoff.tasks.catalog import noop
from tests.conftest import wait_until


@pytest.fixture
def config(write_config) -> Config:
    return load_config(write_config())


def sample_when_due(sampler: HistorySampler) -> Sample:
    """The next sample this sampler takes (once its period has come round and the lock is free)."""
    return wait_until(lambda: sampler.maybe_sample(), timeout=5, what="the sampler to take a sample")  # type: ignore[return-value]


def test_a_sample_holds_queues_deferrals_by_reason_and_signals_per_host(redis_conn: Redis, config: Config) -> None:
    for _ in range(2):
        noop.enqueue(shard=1, connection=redis_conn)
    redis_conn.hset(
        "easeoff:counters:deferred",
        mapping={"heavy|noop|connections": 5, "archive|archive_old_rows|connections": 2, "heavy|noop|lag": 1},
    )
    reading = Reading(host="db1", taken_at=1.0, values={"connections": 0.41234567}, counters={"questions": 1234.0})
    redis_conn.set(READING_KEY.format(host="db1"), reading.to_json())

    taken = HistorySampler(redis_conn, config, period=10).maybe_sample(now=1_000_000.0)

    assert taken is not None
    assert taken.t == 1_000_000.0
    assert taken.queues["heavy"]["ready"] == 2
    assert set(taken.queues["heavy"]) == {"ready", "deferred", "running", "failed", "age"}
    assert set(taken.queues) == {"heavy", "archive", "recount"}  # every configured queue, empty ones too
    assert taken.deferrals == {"connections": 7, "lag": 1}
    assert taken.signals == {"connections": {"db1": 0.4123}}  # `_` bookkeeping values are not signals
    assert read_history(redis_conn, 0) == [taken]


def test_the_list_is_bounded_to_the_newest_samples(redis_conn: Redis, config: Config) -> None:
    sampler = HistorySampler(redis_conn, config, period=0.05, keep=3)
    taken = [sample_when_due(sampler) for _ in range(5)]
    assert redis_conn.llen(HISTORY_KEY) == 3
    assert read_history(redis_conn, 0) == taken[2:]
    assert keep_for(10) == 6 * 3600 // 10
    assert keep_for(0.1) == MAX_SAMPLES  # a short period is capped, not 216,000 samples
    assert keep_for(86400) == 1


def test_several_samplers_take_one_sample_per_period(redis_conn: Redis, config: Config) -> None:
    first = HistorySampler(redis_conn, config, period=1.0)
    second = HistorySampler(redis_conn, config, period=1.0)
    assert first.maybe_sample() is not None
    assert second.maybe_sample() is None  # the first holds this period's lock
    assert redis_conn.llen(HISTORY_KEY) == 1
    assert 0 < redis_conn.pttl(TICK_KEY) <= 900

    sample_when_due(second)  # once the lock lapses, whoever is due next takes the next period
    assert redis_conn.llen(HISTORY_KEY) == 2
    assert first.maybe_sample() is None  # its next period has not come round: no second sample
    redis_conn.delete(TICK_KEY)
    assert first.maybe_sample() is None  # not due, lock or no lock


def test_reading_back_returns_the_window_oldest_first(redis_conn: Redis) -> None:
    assert read_history(redis_conn, 0) == []
    for i in range(600):  # more than one page of LRANGE
        append(redis_conn, Sample(t=1000.0 + i, deferrals={"lag": i}), keep=10_000)
    window = read_history(redis_conn, 1150.0)
    assert [s.t for s in window] == [1000.0 + i for i in range(150, 600)]
    assert window[0].deferrals == {"lag": 150}
    assert len(read_history(redis_conn, 0)) == 600
    assert read_history(redis_conn, 5000.0) == []
