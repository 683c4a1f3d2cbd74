"""`easeoff alerts rules`, judged by the real promtool: `check rules`, and `test rules` — including
a cross-check that Prometheus and the exporter's own evaluation fire at the same moments."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from easeoff.feedback.config import Config, load_config
from easeoff.feedback.observe.alert_rules import BUDGET_BREACHED_RUNBOOK, SWITCH_STALE_RUNBOOK, duration, rule_groups
from easeoff.feedback.observe.watermarks import INACTIVE, Alarm, config_alarms, step
from tests.conftest import run_cli

MARKS = """
[queues.heavy.watermarks.depth]
high = 10
low = 2
for = 120
keep_firing_for = 180
[queues.heavy.watermarks.age]
high = 600
for = 60
[queues.archive.watermarks.depth]
low = 1
for = 0.5
[queues."o'neil \\"q\\" {{x}}"]
[queues."o'neil \\"q\\" {{x}}".watermarks.depth]
high = 5
for = 0
"""


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run the README's test command, which installs it")
    return binary


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(write_config) -> Config:
    return load_config(write_config(extra=MARKS))


@pytest.fixture
def rules_file(write_config, tmp_path: Path) -> Path:
    """The rules as the CLI prints them."""
    result = run_cli("--config", str(write_config(extra=MARKS)), "alerts", "rules")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "rules.yml"
    path.write_text(result.stdout, encoding="utf-8")
    return path


def test_promtool_supports_keep_firing_for() -> None:
    """keep_firing_for arrived in Prometheus 2.42; the Debian package must be at least that."""
    result = subprocess.run([promtool(), "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"version (\d+)\.(\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert (int(found[1]), int(found[2])) >= (2, 42), found[0]


def test_rendered_rules_pass_promtool_check(rules_file: Path, tmp_path: Path) -> None:
    result = run_promtool("check", "rules", str(rules_file), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout  # 5 water-mark alarms, 2 exporter-health, stale switch, budget
    text = rules_file.read_text()
    assert "keep_firing_for: '180s'" in text
    assert "for: '500ms'" in text


def rules_by_alarm(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    """(alertname, queue) → its rule: rules come in the order of the config's alarms."""
    rules = rule_groups(config)["groups"][0]["rules"]
    alarms = config_alarms(config)
    assert [r["alert"] for r in rules] == [a.alertname for a in alarms]
    return {(a.alertname, a.queue): r for a, r in zip(alarms, rules, strict=True)}


@pytest.mark.unit
def test_rules_carry_hysteresis_labels_and_a_runbook(config: Config) -> None:
    rules = rules_by_alarm(config)
    high = rules[("EaseoffQueueDepthHigh", "heavy")]
    assert high["expr"] == (
        'easeoff_queue_ready_jobs{queue="heavy"} > 10 or (easeoff_queue_ready_jobs{queue="heavy"} > 2 and '
        'on(queue) ALERTS{alertname="EaseoffQueueDepthHigh", alertstate="firing", queue="heavy"})'
    )
    assert (high["for"], high["keep_firing_for"]) == ("120s", "180s")
    assert high["labels"] == {"severity": "warning", "queue": "heavy", "measure": "depth", "mark": "high"}
    assert "easeoff status" in high["annotations"]["runbook"]
    low = rules[("EaseoffQueueDepthLow", "heavy")]
    assert low["expr"].startswith('easeoff_queue_ready_jobs{queue="heavy"} < 2 or (')
    alone = rules[("EaseoffQueueAgeHigh", "heavy")]
    assert alone["expr"] == 'easeoff_queue_oldest_job_age_seconds{queue="heavy"} > 600'
    assert "keep_firing_for" not in alone


def test_no_water_marks_still_renders_valid_rules(write_config, tmp_path: Path) -> None:
    result = run_cli("--config", str(write_config()), "alerts", "rules", "--runbook-url", "https://runbooks/easeoff")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "bare.yml"
    path.write_text(result.stdout)
    checked = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    assert "runbook_url: 'https://runbooks/easeoff'" in result.stdout


@pytest.mark.unit
def test_alerts_rules_output_file(write_config, tmp_path: Path) -> None:
    out = tmp_path / "out.yml"
    result = run_cli("--config", str(write_config(extra=MARKS)), "alerts", "rules", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("# Generated by `easeoff alerts rules`")
    bad = run_cli("--config", str(write_config()), "alerts", "rules", "-o", str(tmp_path / "no" / "such" / "x.yml"))
    assert bad.returncode == 2 and bad.stderr.startswith("easeoff: error: cannot write"), bad.stderr


# -- promtool test rules ------------------------------------------------------------------------


def annotations_for(config: Config, alarm: Alarm, value: float) -> dict[str, str]:
    """The annotations Prometheus renders for `alarm` at `value` (the template's two variables)."""
    rule = rules_by_alarm(config)[(alarm.alertname, alarm.queue)]
    assert alarm.queue not in json.dumps(rule["annotations"]), "queue names go through $labels in annotations"
    shown = f"{value:g}"
    return {
        k: v.replace("{{ $labels.queue }}", alarm.queue).replace("{{ $value }}", shown)
        for k, v in rule["annotations"].items()
    }


def expected(config: Config, alarm: Alarm, value: float) -> dict[str, Any]:
    labels = {"severity": "warning", "queue": alarm.queue, "measure": alarm.measure, "mark": alarm.mark}
    return {"exp_labels": labels, "exp_annotations": annotations_for(config, alarm, value)}


def promtool_test(tmp_path: Path, rules: Path, tests: list[dict[str, Any]]) -> None:
    """Run `promtool test rules` on a test file (JSON is YAML) with one minute between evaluations."""
    spec = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "rules_test.yml"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    result = run_promtool("test", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def series(queue: str, values: list[float], metric: str = "easeoff_queue_ready_jobs") -> dict[str, str]:
    return {"series": f"{metric}{{queue={json.dumps(queue)}}}", "values": " ".join(f"{v:g}" for v in values)}


def test_promtool_high_mark_fires_holds_in_the_band_and_keeps_firing(
    config: Config, rules_file: Path, tmp_path: Path
) -> None:
    high = next(a for a in config_alarms(config) if a.queue == "heavy" and a.measure == "depth" and a.mark == "high")
    low = next(a for a in config_alarms(config) if a.queue == "heavy" and a.measure == "depth" and a.mark == "low")
    #         minute: 0  1   2   3   4  5  6  7  8  9  10 11
    depth = [5, 11, 12, 12, 12, 4, 4, 1, 1, 1, 1, 1]

    def at(minute: int, *alerts: dict[str, Any], name: str = "EaseoffQueueDepthHigh") -> dict[str, Any]:
        return {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": list(alerts)}

    promtool_test(
        tmp_path,
        rules_file,
        [
            {
                "interval": "1m",
                "input_series": [series("heavy", depth)],
                "alert_rule_test": [
                    at(1),  # above high since minute 1: pending for 2m
                    at(2),
                    at(3, expected(config, high, 12)),  # fires after `for`
                    at(5, expected(config, high, 4)),  # 4 is between the marks: the ALERTS deadband holds
                    at(6, expected(config, high, 4)),
                    at(7, expected(config, high, 4)),  # 1 is below low: cleared, kept 180s (last value shown)
                    at(9, expected(config, high, 4)),
                    at(10),  # resolved after keep_firing_for
                    at(9, expected(config, low, 1), name="EaseoffQueueDepthLow"),  # below low since 7, for 2m
                    at(8, name="EaseoffQueueDepthLow"),
                ],
            }
        ],
    )


def test_promtool_and_the_exporter_agree_on_random_walks(config: Config, rules_file: Path, tmp_path: Path) -> None:
    """The exporter's pure evaluator predicts, minute by minute, exactly what Prometheus fires."""
    alarms = [a for a in config_alarms(config) if a.queue == "heavy" and a.measure == "depth"]
    rng = random.Random(5)
    tests = []
    for _ in range(6):
        depth, walk = rng.randint(0, 14), []
        for _ in range(30):
            depth = min(15, max(0, depth + rng.choice((-4, -2, -1, 0, 1, 2, 4))))
            walk.append(depth)
        checks = []
        for alarm in alarms:
            state, shown = INACTIVE, 0.0
            for minute, value in enumerate(walk):
                state = step(alarm, state, value, minute * 60.0)
                if alarm.condition(value, False) or (state.firing and state.cleared_since is None):
                    shown = value  # Prometheus shows the last value at which the expression matched
                firing = [expected(config, alarm, shown)] if state.firing else []
                checks.append({"eval_time": f"{minute}m", "alertname": alarm.alertname, "exp_alerts": firing})
        tests.append({"interval": "1m", "input_series": [series("heavy", walk)], "alert_rule_test": checks})
    promtool_test(tmp_path, rules_file, tests)


def test_promtool_age_mark_and_a_queue_name_that_needs_quoting(
    config: Config, rules_file: Path, tmp_path: Path
) -> None:
    odd = next(a for a in config_alarms(config) if a.queue.startswith("o'neil"))
    age = next(a for a in config_alarms(config) if a.queue == "heavy" and a.measure == "age")
    promtool_test(
        tmp_path,
        rules_file,
        [
            {
                "interval": "1m",
                "input_series": [
                    series(odd.queue, [0, 6, 6, 3]),
                    series("heavy", [0, 700, 760, 820, 10], metric="easeoff_queue_oldest_job_age_seconds"),
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": odd.alertname, "exp_alerts": [expected(config, odd, 6)]},
                    {"eval_time": "3m", "alertname": odd.alertname, "exp_alerts": []},  # no band: resolves at once
                    {"eval_time": "1m", "alertname": age.alertname, "exp_alerts": []},
                    {"eval_time": "2m", "alertname": age.alertname, "exp_alerts": [expected(config, age, 760)]},
                    {"eval_time": "4m", "alertname": age.alertname, "exp_alerts": []},
                ],
            }
        ],
    )


def test_promtool_a_budget_breached_past_the_controllers_cuts_fires(rules_file: Path, tmp_path: Path) -> None:
    """Slack below 0 at every step for five minutes fires; a breach the cuts end sooner does not."""
    slack = {"series": 'easeoff_budget_slack{resource="shard:9"}', "values": "0.2 -0.1x6 0.1x3"}
    brief = {"series": 'easeoff_budget_slack{resource="shard:8"}', "values": "0.2 -0.3x3 0.1x6"}
    fired = {
        "exp_labels": {"severity": "warning", "resource": "shard:9"},
        "exp_annotations": {
            "summary": "Budget of shard:9 breached for 300s",
            "description": "The tightest ceiling of shard:9's budget is over its limit: slack -10%.",
            "runbook": BUDGET_BREACHED_RUNBOOK,
        },
    }

    def at(minute: int, *alerts: dict[str, Any]) -> dict[str, Any]:
        return {"eval_time": f"{minute}m", "alertname": "EaseoffBudgetBreached", "exp_alerts": list(alerts)}

    promtool_test(
        tmp_path,
        rules_file,
        [{"interval": "1m", "input_series": [slack, brief], "alert_rule_test": [at(4), at(6, fired), at(8)]}],
    )


@pytest.mark.unit
def test_durations_are_prometheus_durations() -> None:
    assert [duration(s) for s in (0, 1, 120, 0.5, 1.25, 86400)] == ["0s", "1s", "120s", "500ms", "1250ms", "86400s"]


@pytest.mark.parametrize(("limit", "limit_s"), [(None, 86400), ('"2h"', 7200)], ids=["default-1d", "configured-2h"])
def test_promtool_a_switch_older_than_the_limit_fires_stale(
    write_config, tmp_path: Path, limit: str | None, limit_s: int
) -> None:
    """easeoff_switch_age_seconds grows a minute a minute; the alert fires only once it passes
    the limit, for that switch alone, naming it and how long it has been on."""
    extra = f"[switches]\nstale_after = {limit}\n" if limit else ""
    result = run_cli("--config", str(write_config(extra=extra)), "alerts", "rules")
    assert result.returncode == 0, result.stderr
    rules = tmp_path / "rules.yml"
    rules.write_text(result.stdout, encoding="utf-8")
    minutes = limit_s // 60
    old = {"series": 'easeoff_switch_age_seconds{kind="pause",scope="queue:heavy"}', "values": f"0+60x{minutes + 10}"}
    young = {
        "series": 'easeoff_switch_age_seconds{kind="throttle",scope="task:backfill"}',
        "values": f"0+0x{minutes + 10}",
    }
    on_for = {86400 + 300: "1d 0h 5m 0s", 7200 + 300: "2h 5m 0s"}[limit_s + 300]
    fired = {
        "exp_labels": {"severity": "warning", "kind": "pause", "scope": "queue:heavy"},
        "exp_annotations": {
            "summary": f"Switch pause queue:heavy has been on longer than {limit_s}s",
            "description": f"Switch pause queue:heavy has been on for {on_for}.",
            "runbook": SWITCH_STALE_RUNBOOK,
        },
    }
    promtool_test(
        tmp_path,
        rules,
        [
            {
                "interval": "1m",
                "input_series": [old, young],
                "alert_rule_test": [
                    {"eval_time": f"{minutes}m", "alertname": "EaseoffSwitchStale", "exp_alerts": []},  # not past it
                    {"eval_time": f"{minutes + 5}m", "alertname": "EaseoffSwitchStale", "exp_alerts": [fired]},
                ],
            }
        ],
    )
    assert "easeoff switches --stale" in fired["exp_annotations"]["runbook"]
