"""`easeoff dashboard grafana`: the panels the issue asks for, and every query checked against a
real Prometheus that scrapes a real exporter (valid PromQL, and only series the exporter serves)."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli, wait_until
from tests.exporter_support import exporter_process
from tests.prometheus_support import prometheus_server

MARKS = """
[queues.heavy.watermarks.depth]
high = 100
low = 10
[queues.heavy.watermarks.age]
high = 600
[signals.lag]
high = 5
low = 2
[resources."shard:1".budget]
latency = "1.5x"
history_list_length = 5000
"""


@pytest.fixture
def config_path(write_config) -> Path:
    """The test config with water marks, and a `critical` line added to its connections signal."""
    path = write_config(extra=MARKS)
    path.write_text(path.read_text().replace("[signals.connections]\n", "[signals.connections]\ncritical = 0.99\n"))
    return path


@pytest.fixture
def dashboard(config_path: Path) -> dict[str, Any]:
    result = run_cli("--config", str(config_path), "dashboard", "grafana", "--title", "easeoff test")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in dashboard["panels"] if p.get("title") == title]
    assert len(found) == 1, [p.get("title") for p in dashboard["panels"]]
    return found[0]


def threshold_values(p: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"]) for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


@pytest.mark.unit
def test_depth_and_age_panels_draw_the_water_marks_as_lines(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "easeoff test"
    depth = panel(dashboard, "Depth: heavy")
    assert depth["targets"][0]["expr"] == 'easeoff_queue_ready_jobs{queue="heavy"}'
    assert threshold_values(depth) == [("green", None), ("yellow", 10), ("red", 100)]
    assert depth["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "dashed"}
    age = panel(dashboard, "Oldest ready job age: heavy")
    assert age["targets"][0]["expr"] == 'easeoff_queue_oldest_job_age_seconds{queue="heavy"}'
    assert age["fieldConfig"]["defaults"]["unit"] == "s"
    assert threshold_values(age) == [("green", None), ("red", 600)]
    archive = panel(dashboard, "Depth: archive")  # no marks: no lines
    assert archive["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "off"}


@pytest.mark.unit
def test_throughput_is_blue_deferrals_and_failures_red_by_reason(dashboard: dict[str, Any]) -> None:
    throughput = panel(dashboard, "Throughput")
    assert throughput["fieldConfig"]["defaults"]["color"]["fixedColor"] == "blue"
    assert "rate(easeoff_jobs_finished_total[$__rate_interval])" in throughput["targets"][0]["expr"]
    for title, counter in (("Deferrals by reason", "deferred"), ("Failures by reason", "failed")):
        p = panel(dashboard, title)
        assert p["fieldConfig"]["defaults"]["color"]["fixedColor"] == "red"
        assert p["targets"][0]["expr"].startswith("sum by (reason) (rate(easeoff_jobs_" + counter)


@pytest.mark.unit
def test_signals_carry_their_thresholds_and_events_are_annotations(dashboard: dict[str, Any]) -> None:
    signal = panel(dashboard, "Signal: connections")
    assert signal["targets"][0]["expr"] == 'easeoff_signal_value{signal="connections"}'
    assert threshold_values(signal) == [("green", None), ("yellow", 0.9), ("red", 0.95), ("purple", 0.99)]
    names = [a["name"] for a in dashboard["annotations"]["list"]]
    assert names[1:] == [
        "Water-mark transitions",
        "Water-mark alerts (Prometheus)",
        "Hosts out / in",
        "Gate holds / releases",
        "Budget decisions",
        "Switches and annotations",
    ]
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24


@pytest.mark.unit
def test_budgets_switches_rates_shadow_and_lag_have_panels(dashboard: dict[str, Any]) -> None:
    latency = panel(dashboard, "Budget latency: shard:1")
    exprs = [t["expr"] for t in latency["targets"]]
    assert exprs == [
        'easeoff_budget_ceiling{resource="shard:1", ceiling="latency"}',
        'easeoff_budget_observed{resource="shard:1", ceiling="latency"}',
        'easeoff_budget_baseline_seconds{resource="shard:1"}',
    ]
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"
    backlog = panel(dashboard, "Budget history_list_length: shard:1")
    assert backlog["targets"][1]["expr"] == 'easeoff_budget_observed{resource="shard:1", ceiling="history_list_length"}'
    limit = panel(dashboard, "Budget limit: shard:1")
    assert limit["targets"][0]["expr"] == 'easeoff_concurrency_limit{resource="shard:1"}'
    pace = panel(dashboard, "Budget slack and pace: shard:1")
    assert [t["expr"] for t in pace["targets"]] == [
        'easeoff_budget_slack{resource="shard:1"}',
        'easeoff_budget_duty_cycle{resource="shard:1"}',
    ]
    assert "min" not in pace["fieldConfig"]["defaults"]  # a breach is negative slack: drawn below 0
    decisions = panel(dashboard, "Budget: last decisions")
    assert decisions["type"] == "table" and decisions["targets"][0]["expr"] == "easeoff_budget_decision == 1"
    assert all(t["instant"] for t in decisions["targets"])
    titles = {p.get("title") for p in dashboard["panels"]}
    assert "Budget lag: shard:1" not in titles  # no lag ceiling: no panel
    assert panel(dashboard, "Switches in force")["targets"][0]["expr"] == "easeoff_switch_active"
    assert panel(dashboard, "Rates")["targets"][0]["expr"] == "easeoff_rate_limit_per_second"
    assert panel(dashboard, "Shadow verdicts")["targets"][0]["expr"] == "easeoff_shadow_holding"
    assert "easeoff_shadow_deferrals_total" in panel(dashboard, "Shadow deferrals")["targets"][0]["expr"]
    lag = panel(dashboard, "Replica lag")
    assert lag["targets"][0]["expr"] == 'easeoff_signal_value{signal="lag"}'
    assert lag["fieldConfig"]["defaults"]["unit"] == "s"
    assert threshold_values(lag) == [("green", None), ("yellow", 2), ("red", 5)]
    assert "Signal: lag" not in titles  # drawn once, in seconds


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return [e.replace("$__rate_interval", "1m") for e in exprs]


@pytest.mark.slow
def test_every_query_is_valid_promql_over_series_the_exporter_serves(
    dashboard: dict[str, Any], config_path: Path, tmp_path: Path
) -> None:
    with exporter_process(config_path, tmp_path) as exporter:
        with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=10) as response:
            served = set(re.findall(r"^# HELP (\w+)", response.read().decode(), flags=re.MULTILINE))
        with prometheus_server(tmp_path, scrape_targets=[exporter.url.removeprefix("http://")]) as prom:

            def query(expr: str) -> dict[str, Any]:
                params = urllib.parse.urlencode({"query": expr})
                with urllib.request.urlopen(f"{prom}/api/v1/query?{params}", timeout=5) as response:
                    return json.loads(response.read())

            wait_until(lambda: query("easeoff_redis_up == 1")["data"]["result"], timeout=20, what="a first scrape")
            for expr in queries(dashboard):
                assert query(expr)["status"] == "success", expr
                for name in re.findall(r"\beaseoff_\w+", expr):
                    assert name in served, f"{name} (in {expr}) is not served by the exporter"
