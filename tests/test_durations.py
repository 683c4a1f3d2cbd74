"""One duration syntax for every duration in the config, the CLI and a rate's window: pure, no servers."""

from __future__ import annotations

import pytest

from easeoff.feedback.config import ConfigError, parse_config
from easeoff.feedback.durations import parse_duration
from easeoff.feedback.rate import parse_rate

pytestmark = pytest.mark.unit

BASE = """
[redis]
url = "redis://127.0.0.1:6379/0"
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[signals.connections]
high = 0.8
low = 0.6
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("1.5", 1.5), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("1h 30m", 5400), ("1d", 86400),
     ("1d2h3m4s", 93784), ("250ms", 0.25), ("1m30s500ms", 90.5), ("0.5h", 1800), (" 2m ", 120)],
)  # fmt: skip
def test_every_form_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "x", "2 min", "30m1h", "1h1h", "1h-30m", "h1", "1.h", "inf", "nan"])
def test_typos_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_zero_only_where_it_means_something() -> None:
    with pytest.raises(ValueError, match="above 0"):
        parse_duration("0s")
    assert parse_duration("0s", zero_ok=True) == 0


def test_every_config_duration_takes_the_same_syntax() -> None:
    text = (
        BASE.replace('6379/0"', '6379/0"\nreplica_ack_timeout = "250ms"')
        + """
[probe]
interval = "500ms"
timeout = "200ms"
stale_after = "2s"
dormant_after = "1m30s"
[backoff]
base = "1s"
cap = "2m"
max_age = "1d12h"
unknown_resource_grace = "5m"
[switches]
stale_after = "1h30m"
[queues.heavy.watermarks.depth]
high = 100
low = 10
for = "2m"
keep_firing_for = "1h30m"
[queues.heavy.watermarks.age]
high = "1h"
low = "90s"
for = 0
"""
    )
    config = parse_config(text, "t.toml", {})
    assert config.replica_ack_timeout == 0.25
    assert (config.probe_interval, config.probe_timeout, config.stale_after) == (0.5, 0.2, 2.0)
    assert config.probe_dormant_after == 90
    backoff = config.backoff
    assert (backoff.base, backoff.cap, backoff.max_age, backoff.unknown_resource_grace) == (1, 120, 129600, 300)
    assert config.switch_stale_after == 5400
    depth, age = config.queues["heavy"].watermarks
    assert (depth.for_s, depth.keep_firing_for_s) == (120, 5400)
    assert (age.high, age.low, age.for_s) == (3600, 90, 0)


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('[queues.q.watermarks.depth]\nhigh = 5\nfor = "soon"', "queues.q.watermarks.depth.for", "bad duration"),
        ('[queues.q.watermarks.depth]\nhigh = "5m"', "queues.q.watermarks.depth.high", "expected a number"),
        ('[probe]\ninterval = "10ms"', "probe.interval", ">= 0.05"),
        ("[backoff]\nbase = true", "backoff.base", "or a number of seconds"),
        ('[switches]\nstale_after = "0s"', "switches.stale_after", "above 0"),
    ],
)
def test_a_bad_duration_names_its_key(extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra, "t.toml", {})
    assert err.value.key == key and problem in str(err.value), str(err.value)


def test_a_rate_window_counts_in_the_same_units() -> None:
    assert [parse_rate(t).per for t in ("120/min", "5/s", "1000/hour", "6/10s", "6/2m", "6/1.5h")] == [
        60,
        1,
        3600,
        10,
        120,
        5400,
    ]
