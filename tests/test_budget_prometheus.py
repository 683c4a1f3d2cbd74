"""A budget's live latency from the app's own histogram, through a real Prometheus scraping a
real exporter: the p99 lands in the bucket the slow requests are in; too few requests for
the quantile, or no such series, is no reading (None, with why), never a fast site."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.budget.measure import observe_budget
from easeoff.feedback.budget.prometheus import prometheus_latency
from easeoff.feedback.config import BudgetConfig, parse_config
from tests.conftest import wait_until
from tests.prometheus_support import free_port, prometheus_server

pytestmark = pytest.mark.slow

BOUNDS = ("0.001", "0.01", "0.1", "+Inf")


def histogram(name: str, per_second: float, shares: tuple[float, ...], elapsed: float) -> str:
    """Cumulative buckets of `per_second` requests, `shares` of them in each bucket, since start."""
    lines, running = [f"# TYPE {name} histogram"], 0.0
    for bound, share in zip(BOUNDS, shares, strict=True):
        running += share * per_second * elapsed
        lines.append(f'{name}_bucket{{le="{bound}"}} {running:.0f}')
    lines += [f"{name}_count {running:.0f}", f"{name}_sum {running * 0.001:.3f}"]
    return "\n".join(lines)


@pytest.fixture
def exporter() -> Iterator[str]:
    """`busy`: 100 requests a second, 3% of them 10-100 ms; `quiet`: one request a second."""
    began = time.monotonic()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it by this name
            elapsed = time.monotonic() - began
            body = "\n".join(
                [
                    histogram("busy_seconds", 100, (0.97, 0.0, 0.03, 0.0), elapsed),
                    histogram("quiet_seconds", 1, (1.0, 0.0, 0.0, 0.0), elapsed),
                ]
            )
            data = (body + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_histogram_quantile_and_its_refusals(redis_conn: Redis, tmp_path: Path, exporter: str) -> None:
    clock.follow(redis_conn)
    with prometheus_server(tmp_path, scrape_targets=[exporter]) as url:
        config = parse_config(
            f"""
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[resources."shard:1".budget]
latency = "50ms"
latency_source = "prometheus"
prometheus_url = "{url}"
metric = "busy_seconds"
""",
            "test.toml",
            {},
        )

        def latency():  # type: ignore[no-untyped-def]
            seen = observe_budget(redis_conn, config, "shard:1")
            assert seen is not None
            return seen if seen.ceilings[0].value is not None else None

        seen = wait_until(latency, 30, interval=0.5, what="Prometheus to hold two scrapes of the histogram")
        ceiling = seen.ceilings[0]  # type: ignore[attr-defined]
        assert ceiling.name == "latency" and ceiling.limit == 0.05
        assert 0.01 < ceiling.value <= 0.1, ceiling  # the p99 is among the 3% slow requests
        assert not seen.stale  # type: ignore[attr-defined]

        quiet = BudgetConfig(latency=0.05, latency_source="prometheus", prometheus_url=url, metric="quiet_seconds")
        value, why = prometheus_latency(quiet, 2.0)
        assert value is None and why is not None and "the p99 needs 200" in why, why
        gone = BudgetConfig(latency=0.05, latency_source="prometheus", prometheus_url=url, metric="gone_seconds")
        value, why = prometheus_latency(gone, 2.0)
        assert value is None and why is not None and why.startswith("prometheus: no samples"), why
    # Prometheus down: unreadable, and the observation is stale (the controller holds).
    down = observe_budget(redis_conn, config, "shard:1")
    assert down is not None and down.stale and down.ceilings[0].value is None
    assert down.unreadable == ("latency: prometheus: URLError",), down.unreadable
