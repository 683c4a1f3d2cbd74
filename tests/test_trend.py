"""Trend prediction, pure: the fit, its bounds, and a predicted hold's lack of a band."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import parse_config
from easeoff.feedback.signals.hysteresis import next_states
from easeoff.feedback.signals.trend import POINTS, Trends, seconds_to, slope

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    '[mysql.hosts.r1]\nurl = "mysql://root@127.0.0.1:3306"\n[resources."s"]\nprimary = "r1"\n'
    "[signals.lag]\nhigh = 6.0\nlow = 1.0\npredict = 10\n",
    "trend.toml",
    {},
)


def test_a_steady_rise_is_fitted_and_timed_to_high() -> None:
    trends = Trends()
    rates = [trends.add("r1", "lag", float(t), 0.5 * t) for t in range(5)]
    assert rates[:2] == [None, None]  # too few points to call a trend
    assert rates[-1] == 0.5
    assert seconds_to(6.0, 2.0, 0.5) == 8.0
    assert seconds_to(6.0, 2.0, 0.0) is None and seconds_to(6.0, 2.0, -1.0) is None


def test_the_fit_forgets_an_old_trend() -> None:
    trends = Trends()
    for t in range(10):
        trends.add("r1", "lag", float(t), float(t))  # rising...
    for t in range(10, 10 + POINTS):
        rate = trends.add("r1", "lag", float(t), 9.0)  # ...then flat for a window's worth
    assert rate == 0.0


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=3, max_size=POINTS))
def test_a_line_through_constant_times_is_no_trend(values: list[float]) -> None:
    assert slope([(5.0, v) for v in values]) is None


def test_a_predicted_hold_has_no_band_a_crossed_one_does() -> None:
    # lag 3 was strained by prediction: at 3 again, no prediction, it is released (no band)...
    assert next_states("r1", {"lag": 3.0}, {"lag": True}, CONFIG, predicted=frozenset({"lag"})) == {"lag": False}
    # ...while lag that crossed high holds until below low, as always.
    assert next_states("r1", {"lag": 3.0}, {"lag": True}, CONFIG) == {"lag": True}
