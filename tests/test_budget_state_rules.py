"""What the fleet and the ops views make of a budget's stored record, decided without servers:
a `1.5x` ceiling is absolute only once a baseline is known, slack is unknown rather than guessed,
a record another version wrote reads as unknown, and an unreadable controller state starts cold.
test_budget_observe.py and test_budget_fleet.py show the same through Redis."""

from __future__ import annotations

import math

import pytest

from easeoff.feedback.budget.controller import ControllerState, Why
from easeoff.feedback.budget.fleet import LEARN_WINDOWS, load_state, tuning
from easeoff.feedback.budget.observation import Ceiling
from easeoff.feedback.budget.state import BudgetState, CeilingView, LastStep, ceilings_of, decode_last
from easeoff.feedback.config import parse_config

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    """
[mysql.hosts.db-1]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.db-2]
url = "mysql://root@127.0.0.1:3307"
[resources."shard:1"]
primary = "db-1"
replicas = ["db-2"]
[resources."shard:1".budget]
latency = "1.5x"
lag = "5s"
history_list_length = 200000
window = "10s"
[resources."shard:2"]
hosts = ["db-1"]
[resources."shard:2".concurrency]
max = 6
[resources."shard:2".budget]
latency = "4ms"
""",
    "budget.toml",
    {},
)
BUDGET = CONFIG.resources["shard:1"].budget


def last(baseline: float | None, *ceilings: Ceiling, at: float = 100.0) -> LastStep:
    return LastStep(at, Why.GROW, "grow: slack 0.4", level=2.0, slack=0.4, baseline=baseline, ceilings=ceilings)


def test_a_multiple_of_the_baseline_has_no_limit_until_a_baseline_is_learned() -> None:
    assert BUDGET is not None
    assert ceilings_of(BUDGET, None) == (
        CeilingView("latency", None, None),
        CeilingView("lag", 5.0, None),
        CeilingView("history_list_length", 200000.0, None),
    )
    seen = last(0.002, Ceiling("latency", 0.0024, 0.003), Ceiling("lag", 1.0, 5.0))
    latency, lag, backlog = ceilings_of(BUDGET, seen)
    assert latency.limit == pytest.approx(0.003) and latency.value == 0.0024 and latency.unit == "s"
    assert latency.slack == pytest.approx(0.2)
    assert (lag.value, lag.slack, backlog.value, backlog.unit) == (1.0, 0.8, None, "")
    absolute = CONFIG.resources["shard:2"].budget
    assert absolute is not None
    assert ceilings_of(absolute, None) == (CeilingView("latency", 0.004, None),)  # absolute: known at once


def test_slack_is_unknown_rather_than_guessed() -> None:
    assert CeilingView("lag", 5.0, 6.0).slack == pytest.approx(-0.2)  # a breach is negative
    assert CeilingView("lag", None, 1.0).slack is None
    assert CeilingView("lag", 5.0, None).slack is None
    assert CeilingView("lag", 5.0, math.inf).slack is None
    assert CeilingView("lag", 0.0, 1.0).slack is None


def test_a_record_another_version_wrote_reads_as_unknown_not_guessed_at() -> None:
    step = last(0.002, Ceiling("latency", 0.0024, 0.003))
    assert decode_last(step.encode()) == step
    assert decode_last(None) is None
    assert decode_last(b'{"at": "yesterday"}') is None
    assert decode_last(b"not json") is None


def test_the_state_as_ops_read_it() -> None:
    never = BudgetState("shard:1", (), None, limit=0, in_use=0, duty=None, last=None)
    assert (never.pace, never.slack, never.age(50.0)) == (1.0, None, None)
    assert never.as_dict(50.0)["decision"] is None
    paced = BudgetState("shard:1", (), 0.002, limit=1, in_use=1, duty=0.25, last=last(0.002, at=100.0))
    assert (paced.pace, paced.slack, paced.age(130.0), paced.age(90.0)) == (0.25, 0.4, 30.0, 0.0)
    assert paced.as_dict(130.0)["decision"] == {"why": "grow", "text": "grow: slack 0.4", "at": 100.0, "age_s": 30.0}


def test_an_unreadable_controller_state_starts_cold() -> None:
    """A cold start idles, learns and grows from below one job at a time: the safe side."""
    assert load_state(None) == ControllerState()
    assert load_state(b"{not json") == ControllerState()
    assert load_state(b'{"level": "high"}') == ControllerState()
    warm = ControllerState(level=3.0, idle_until=50.0)
    assert load_state(b'{"level": 3.0, "idle_until": 50.0}') == warm


def test_the_controllers_clocks_follow_the_budgets_window_and_its_top_the_concurrency_table() -> None:
    windowed = tuning(CONFIG.resources["shard:1"], interval=0.5)
    assert (windowed.settle_s, windowed.cut_cooldown_s) == (10.0, 10.0)
    assert windowed.learn_s == LEARN_WINDOWS * 10.0 + 2 * 0.5
    capped = tuning(CONFIG.resources["shard:2"], interval=1.0)
    assert capped.max_level == 6.0 and capped.settle_s == 5.0  # the default window
