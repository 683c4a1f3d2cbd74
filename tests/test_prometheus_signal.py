"""A live-traffic signal read from a real Prometheus server's HTTP API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.verdict.gate import judge
from tests.prometheus_support import free_port, prometheus_server

pytestmark = pytest.mark.slow

SIGNAL = """
[signals.site_rps]
source = "prometheus"
url = "{url}"
query = "{query}"
high = 40
low = 30
"""


def verdict_for(redis: Redis, write_config, url: str, query: str):
    config = load_config(write_config(extra=SIGNAL.format(url=url, query=query)))
    snapshot = ReadingsCache(redis, config).probe_now()
    return snapshot.get("prometheus:site_rps"), judge(["shard:1"], snapshot, config, time.time())


def test_prometheus_query_above_high_holds_all_work(redis_conn: Redis, write_config, tmp_path: Path) -> None:
    with prometheus_server(tmp_path) as url:
        reading, verdict = verdict_for(redis_conn, write_config, url, "vector(42)")
        assert reading is not None and reading.values["site_rps"] == 42
        assert verdict.texts == ["site_rps:prometheus 42 > high 40"]

        redis_conn.flushdb()
        reading, verdict = verdict_for(redis_conn, write_config, url, "vector(12) + vector(3)")
        assert reading is not None and reading.values["site_rps"] == 15
        assert verdict.admit


def test_unreachable_prometheus_fails_closed(redis_conn: Redis, write_config) -> None:
    _, verdict = verdict_for(redis_conn, write_config, f"http://127.0.0.1:{free_port()}", "vector(1)")
    assert len(verdict.reasons) == 1
    assert verdict.texts[0].startswith("probe_error:prometheus:site_rps (prometheus: URLError)")


def test_an_empty_result_is_no_reading_not_a_healthy_zero(redis_conn: Redis, write_config, tmp_path: Path) -> None:
    """A series that is gone (exporter down, a misspelled metric) reads as nothing known: hold."""
    query = 'sum(rate(http_requests_total{job=\\"gone\\"}[1m]))'
    with prometheus_server(tmp_path) as url:
        reading, verdict = verdict_for(redis_conn, write_config, url, query)
    assert reading is not None and "site_rps" not in reading.values
    assert verdict.texts == [
        'probe_error:prometheus:site_rps (prometheus: no samples for sum(rate(http_requests_total{job="gone"}[1m])))'
    ]


def test_nan_and_infinity_hold_and_say_so(redis_conn: Redis, write_config, tmp_path: Path) -> None:
    """A rate over nothing or a division by zero would compare as healthy: it holds, named."""
    with prometheus_server(tmp_path) as url:
        for query, says in [
            ("vector(0/0)", "nan (not a number)"),
            ("0/0", "nan (not a number)"),
            ("vector(1/0)", "inf (not a finite number)"),
            ("-1/0", "-inf (not a finite number)"),
        ]:
            redis_conn.flushdb()
            reading, verdict = verdict_for(redis_conn, write_config, url, query)
            assert reading is not None and reading.notes == {"site_rps": says}, query
            assert verdict.texts == [f"site_rps:prometheus {says}"], query
