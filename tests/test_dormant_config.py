"""Config of demand-following probing (`probe.dormant_after`, `probe.dormant_interval`): pure, no servers."""

from __future__ import annotations

import pytest

from easeoff.feedback.config import ConfigError, parse_config

pytestmark = pytest.mark.unit

GOOD = """
[redis]
url = "redis://127.0.0.1:6379/0"
[mysql.hosts.db-1]
url = "mysql://probe@10.0.0.5:3307"
[resources."shard:1"]
hosts = ["db-1"]
[signals.connections]
high = 0.8
low = 0.6
"""


def test_defaults_follow_vitess_a_minute_then_five_seconds() -> None:
    config = parse_config(GOOD, "test.toml", {})
    assert (config.probe_dormant_after, config.probe_dormant_interval) == (60.0, 5.0)
    slow = parse_config(GOOD + "[probe]\ninterval = 8\n", "test.toml", {})
    assert slow.probe_dormant_interval == 8.0  # never faster than the interval itself


def test_durations_as_numbers_or_text() -> None:
    config = parse_config(GOOD + '[probe]\ndormant_after = "2m"\ndormant_interval = 3\n', "test.toml", {})
    assert (config.probe_dormant_after, config.probe_dormant_interval) == (120.0, 3.0)


@pytest.mark.parametrize(
    ("probe", "key", "problem"),
    [
        ('dormant_after = "soon"', "probe.dormant_after", "bad duration"),
        ("dormant_after = 0", "probe.dormant_after", "above 0"),
        ('dormant_interval = "5 sec"', "probe.dormant_interval", "bad duration"),
        ("interval = 2\ndormant_interval = 1", "probe.dormant_interval", "at least probe.interval"),
        ("dormant = 1", "probe.dormant", "unknown key"),
    ],
)
def test_bad_values_get_one_line_errors(probe: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD + "[probe]\n" + probe + "\n", "test.toml", {})
    message = str(err.value)
    assert key in message and problem in message and "\n" not in message
