"""A real Prometheus on loopback scrapes a real `easeoff exporter` and evaluates `easeoff alerts rules`:
the water-mark alerts fire, hold in the hysteresis band, and resolve — and the exporter agrees."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.tasks.catalog import noop
from tests.conftest import run_cli, stays_true, wait_until
from tests.exporter_support import ExporterProcess, exporter_process, sample
from tests.prometheus_support import prometheus_server

pytestmark = pytest.mark.slow

# Short enough for a test: 1 s `for`, 2 s `keep_firing_for`, Prometheus scraping and evaluating every second.
MARKS = """
[queues.heavy.watermarks.depth]
high = 5
low = 2
for = 1
keep_firing_for = 2
"""


def api(base: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}/api/v1/{path}{query}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def water_mark_alerts(base: str) -> dict[str, dict[str, Any]]:
    """alertname → the alert, for the heavy queue's water-mark alerts Prometheus holds now."""
    alerts = api(base, "alerts")["alerts"]
    return {
        a["labels"]["alertname"]: a
        for a in alerts
        if a["labels"]["alertname"].startswith("EaseoffQueue") and a["labels"].get("queue") == "heavy"
    }


def states(base: str) -> dict[str, str]:
    return {name: alert["state"] for name, alert in water_mark_alerts(base).items()}


def exporter_state(exporter: ExporterProcess, mark: str) -> float | None:
    """The exporter's alert-state gauge for the heavy queue's depth alarm: 0, 1 or 2."""
    alertname = f"EaseoffQueueDepth{mark.title()}"
    labels = {"queue": "heavy", "measure": "depth", "mark": mark, "alertname": alertname}
    return sample(exporter.metrics(), "easeoff_queue_watermark_alert", **labels)


def set_depth(redis: Redis, depth: int) -> None:
    queue = Queue("heavy", connection=redis, serializer=JSONSerializer)
    while queue.count < depth:
        noop.enqueue(shard=1, connection=redis)
    while queue.count > depth:
        job_id = redis.lindex(queue.key, 0).decode()
        queue.remove(job_id)
        Job.fetch(job_id, connection=redis, serializer=JSONSerializer).delete()


def test_high_water_fires_holds_in_the_band_resolves_below_low_and_low_water_fires(
    redis_conn: Redis, write_config, tmp_path: Path
) -> None:
    config = write_config(extra=MARKS)
    rules = tmp_path / "rules.yml"
    rendered = run_cli("--config", str(config), "alerts", "rules", "-o", str(rules))
    assert rendered.returncode == 0, rendered.stderr
    set_depth(redis_conn, 3)  # between the marks: neither alert

    with exporter_process(config, tmp_path) as exporter:
        target = exporter.url.removeprefix("http://")
        with prometheus_server(tmp_path, scrape_targets=[target], rules=rules) as prom:
            wait_until(
                lambda: api(prom, "query", query='easeoff_queue_ready_jobs{queue="heavy"} == 3')["result"],
                timeout=20,
                what="Prometheus to scrape the exporter",
            )
            stays_true(lambda: states(prom) == {}, seconds=3, what="no water-mark alert between the marks")

            set_depth(redis_conn, 8)
            wait_until(
                lambda: states(prom) == {"EaseoffQueueDepthHigh": "firing"},
                timeout=20,
                what="the high-water alert to fire",
            )
            # The exporter's own evaluation of the same marks agrees (it ticks on its own schedule).
            wait_until(lambda: exporter_state(exporter, "high") == 2, timeout=10, what="the exporter to agree")
            alert = water_mark_alerts(prom)["EaseoffQueueDepthHigh"]
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["description"].startswith("Queue heavy has 8 ready jobs, above its high")
            assert "easeoff status" in alert["annotations"]["runbook"]

            # Back between the marks: the ALERTS deadband holds it, for longer than for + keep_firing_for.
            set_depth(redis_conn, 3)
            stays_true(
                lambda: states(prom) == {"EaseoffQueueDepthHigh": "firing"},
                seconds=5,
                what="the high-water alert to hold between the marks",
            )

            # Drained below the low mark: the high alert resolves (after keep_firing_for), the low one fires.
            set_depth(redis_conn, 1)
            wait_until(
                lambda: states(prom) == {"EaseoffQueueDepthLow": "firing"},
                timeout=20,
                what="high to resolve and low to fire",
            )
            assert "running dry" in water_mark_alerts(prom)["EaseoffQueueDepthLow"]["annotations"]["runbook"]

            wait_until(
                lambda: (exporter_state(exporter, "high"), exporter_state(exporter, "low")) == (0, 2),
                timeout=10,
                what="the exporter to agree",
            )
    log = exporter.output()  # the depth it logs is whatever it read as the jobs went in or out one by one
    assert re.search(r"EaseoffQueueDepthHigh queue=heavy: pending -> firing \(depth [678] above high 5", log), log
    assert re.search(r"EaseoffQueueDepthHigh queue=heavy: firing -> inactive \(depth [01] at or below low 2", log), log
    assert re.search(r"EaseoffQueueDepthLow queue=heavy: pending -> firing \(depth [01] below low 2", log), log
