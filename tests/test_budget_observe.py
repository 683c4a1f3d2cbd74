"""Budgets made visible: the exporter's series, `/api/state`, the page (in a real headless
Chromium) and `easeoff status`, each read from Redis state written by the controller's own step
(feedback/budget/fleet.py's step_budget and budget_step.lua), not by hand."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.budget.controller_state import ControllerState, Decision, Why
from easeoff.feedback.budget.fleet import step_budget
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling
from easeoff.feedback.budget.state import LAST_FIELD, read_budgets
from easeoff.feedback.config import Config, load_config
from easeoff.feedback.levers.limits import current_limits
from easeoff.feedback.observe.exporter import Exporter
from tests.conftest import run_cli, wait_until
from tests.exporter_support import Samples, exporter_process, parse_samples, sample
from tests.test_page import headless, parse_dom

BUDGETS = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".budget]
latency = "4ms"
history_list_length = 1000
[resources."shard:8"]
hosts = ["db1"]
[resources."shard:8".concurrency]
min = 1
max = 6
[resources."shard:8".budget]
latency = "1.5x"
"""
SHARD9, SHARD8 = "shard:9", "shard:8"


@pytest.fixture
def config_path(write_config: Callable[..., Path]) -> Path:
    return write_config(interval=0.05, extra=BUDGETS)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


def fleet_time(redis: Redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1e6


def stepped(redis: Redis, config: Config, obs: Callable[[], BudgetObservation]) -> Decision:
    """One step of the controller as a prober takes it (in the next free interval)."""
    done = wait_until(lambda: step_budget(redis, config, obs().resource, obs), 3, what="a budget step")
    return done.decision


def put_level(redis: Redis, resource: str, level: float) -> None:
    """The controller's state at `level`, past its cold start (as its own step would leave it)."""
    state = ControllerState(level=level, idle_until=0.0)
    redis.hset(keys.budget_key(resource), "controller", msgspec.json.encode(state))


def scrape(config: Config, redis: Redis) -> Samples:
    return parse_samples(generate_latest(Exporter(redis, config).registry).decode())


def budget_state(redis: Redis, config: Config) -> None:
    """shard:9 cut on a breach below one job at a time; shard:8 holding at 3 on a learned baseline."""
    put_level(redis, SHARD9, 0.8)
    breach = (Ceiling("latency", 0.005, 0.004), Ceiling("history_list_length", 200.0, 1000.0))
    decision = stepped(redis, config, lambda: BudgetObservation(SHARD9, fleet_time(redis), breach, 0.001, 1, 1.0))
    assert decision.why == Why.CUT_BREACH and decision.duty is not None
    put_level(redis, SHARD8, 3.0)
    fine = (Ceiling("latency", 0.0025, 0.003),)
    decision = stepped(redis, config, lambda: BudgetObservation(SHARD8, fleet_time(redis), fine, 0.002, 3, 2.0))
    assert decision.why == Why.HOLD_MEASURING and decision.concurrency == 3


def test_the_exporter_shows_each_budget_as_the_controller_wrote_it(redis_conn: Redis, config: Config) -> None:
    # Never stepped: the limit of a budget with no concurrency table is still exported (one job,
    # what the leases default to), the absolute ceilings are known, nothing observed yet.
    samples = scrape(config, redis_conn)
    assert sample(samples, "easeoff_concurrency_limit", resource=SHARD9) == 1
    assert sample(samples, "easeoff_concurrency_leases", resource=SHARD9) == 0
    assert sample(samples, "easeoff_budget_ceiling", resource=SHARD9, ceiling="latency") == 0.004
    assert sample(samples, "easeoff_budget_ceiling", resource=SHARD9, ceiling="history_list_length") == 1000
    assert sample(samples, "easeoff_budget_ceiling", resource=SHARD8, ceiling="latency") is None  # 1.5x: no baseline
    assert sample(samples, "easeoff_budget_observed", resource=SHARD9, ceiling="latency") is None
    assert sample(samples, "easeoff_budget_duty_cycle", resource=SHARD9) == 1
    assert sample(samples, "easeoff_budget_decision", resource=SHARD9, why="learning") == 0
    assert sample(samples, "easeoff_budget_step_age_seconds", resource=SHARD9) is None

    # A cold start learns: limit 0, the reason `learning`, what it saw.
    cold = (Ceiling("latency", 0.001, 0.004), Ceiling("history_list_length", 300.0, 1000.0))
    learning = stepped(redis_conn, config, lambda: BudgetObservation(SHARD9, fleet_time(redis_conn), cold, None, 0, 0))
    assert learning.why == Why.LEARNING
    samples = scrape(config, redis_conn)
    assert sample(samples, "easeoff_concurrency_limit", resource=SHARD9) == 0
    assert sample(samples, "easeoff_budget_decision", resource=SHARD9, why="learning") == 1
    assert sample(samples, "easeoff_budget_level", resource=SHARD9) == 0
    assert sample(samples, "easeoff_budget_observed", resource=SHARD9, ceiling="latency") == 0.001
    assert sample(samples, "easeoff_budget_observed", resource=SHARD9, ceiling="history_list_length") == 300
    assert sample(samples, "easeoff_budget_slack", resource=SHARD9) == pytest.approx(0.7)  # the tighter: 1 - 300/1000
    assert 0 <= (sample(samples, "easeoff_budget_step_age_seconds", resource=SHARD9) or -1) < 5

    budget_state(redis_conn, config)
    samples = scrape(config, redis_conn)
    duty = float(redis_conn.get(keys.duty_key(SHARD9)) or 0)
    assert 0 < duty < 0.8
    assert sample(samples, "easeoff_budget_duty_cycle", resource=SHARD9) == duty
    assert sample(samples, "easeoff_budget_level", resource=SHARD9) == duty
    assert sample(samples, "easeoff_concurrency_limit", resource=SHARD9) == 1
    assert sample(samples, "easeoff_budget_slack", resource=SHARD9) == pytest.approx(-0.25)
    assert sample(samples, "easeoff_budget_observed", resource=SHARD9, ceiling="latency") == 0.005
    assert sample(samples, "easeoff_budget_baseline_seconds", resource=SHARD9) == 0.001
    assert sample(samples, "easeoff_budget_decision", resource=SHARD9, why="cut_breach") == 1
    assert sample(samples, "easeoff_budget_decision", resource=SHARD9, why="learning") == 0
    assert sum(sample(samples, "easeoff_budget_decision", resource=SHARD9, why=str(w)) or 0 for w in Why) == 1

    # A multiple of the baseline is exported absolute: 1.5 x 2 ms.
    assert sample(samples, "easeoff_budget_ceiling", resource=SHARD8, ceiling="latency") == pytest.approx(0.003)
    assert sample(samples, "easeoff_budget_baseline_seconds", resource=SHARD8) == 0.002
    assert sample(samples, "easeoff_concurrency_limit", resource=SHARD8) == 3
    assert sample(samples, "easeoff_budget_duty_cycle", resource=SHARD8) == 1
    assert sample(samples, "easeoff_budget_decision", resource=SHARD8, why="hold_measuring") == 1


def test_the_reader_and_current_limits_agree_and_a_foreign_record_reads_as_unknown(
    redis_conn: Redis, config: Config
) -> None:
    budget_state(redis_conn, config)
    budgets = read_budgets(redis_conn, config)
    assert set(budgets) == {SHARD9, SHARD8}
    limits = current_limits(redis_conn, config)
    assert {name: budgets[name].limit for name in budgets} == {name: limits[name][0] for name in budgets}
    last = budgets[SHARD9].last
    assert last is not None and last.why == Why.CUT_BREACH and last.text.startswith("cut_breach level")
    # A record another version wrote (or garbage) is unknown, never guessed at.
    redis_conn.hset(keys.budget_key(SHARD9), LAST_FIELD, b'{"why": "no_such_reason"}')
    assert read_budgets(redis_conn, config)[SHARD9].last is None


def test_the_page_and_the_state_show_the_budget_panel(
    redis_conn: Redis, config: Config, config_path: Path, tmp_path: Path
) -> None:
    budget_state(redis_conn, config)
    with exporter_process(config_path, tmp_path) as exporter:
        dumped = headless(tmp_path, "--dump-dom", f"{exporter.url}/?hours=1")
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = parse_dom(dumped.stdout)
        (table,) = dom.find("table", id="budget-table")
        rows = {r.attrs["data-resource"]: r for r in table.find("tr") if "data-resource" in r.attrs}
        assert set(rows) == {SHARD9, SHARD8}
        cut = rows[SHARD9]
        assert cut.attrs["data-why"] == "cut_breach" and "breach" in cut.classes()
        text = " ".join(cut.all_text().split())
        assert "latency ≤ 4 ms" in text and "latency 5 ms" in text and "-25%" in text, text
        assert "duty" in text, text
        (decision,) = [td for td in cut.find("td") if "decision" in td.classes()]
        assert [s.all_text() for s in decision.find("span", cls="kind")] == ["cut_breach"]
        assert decision.text.startswith("level 0.") and "slack -0.250" in decision.text, decision.text
        assert decision.find("span", cls="who")[0].all_text().endswith(" ago")
        held = rows[SHARD8]
        assert held.attrs["data-limit"] == "3" and held.attrs["data-duty"] == "1"
        assert "latency ≤ 3 ms" in " ".join(held.all_text().split())

        with urllib.request.urlopen(f"{exporter.url}/api/state", timeout=10) as response:
            state = json.loads(response.read())["state"]["budgets"]
        assert state[SHARD9]["decision"]["why"] == "cut_breach" and state[SHARD9]["slack"] == pytest.approx(-0.25)
        assert state[SHARD8]["ceilings"]["latency"]["limit"] == pytest.approx(0.003)
        assert state[SHARD8]["limit"] == 3 and state[SHARD8]["duty"] is None


def test_status_lists_budgeted_resources_with_their_limit_pace_and_reason(
    redis_conn: Redis, config: Config, config_path: Path
) -> None:
    budget_state(redis_conn, config)
    result = run_cli("--config", str(config_path), "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["limits"][SHARD9] == {"limit": 1, "in_use": 0, "source": "budget"}
    assert report["limits"][SHARD8]["limit"] == 3
    assert report["budgets"][SHARD9]["decision"]["why"] == "cut_breach"
    assert 0 < report["budgets"][SHARD9]["duty"] < 0.8

    text = run_cli("--config", str(config_path), "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    (row,) = [line for line in lines if line.startswith(SHARD9) and "budget" in line]
    assert row.split()[1:3] == ["1", "0"] and "%" in row, row
    assert any("latency 0.005s of 0.004s; history_list_length 200 of 1000" in line for line in lines), text.stdout
    assert any("ago: cut_breach level" in line for line in lines), text.stdout
