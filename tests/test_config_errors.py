"""Where msgspec's errors point, in the config's own key spelling: pure, no servers."""

from __future__ import annotations

import pytest

from easeoff.feedback.config import ConfigError, parse_config
from easeoff.feedback.rate import Rate, parse_rate

pytestmark = pytest.mark.unit

BASE = """
[mysql.hosts.db-1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db-1"]
[signals.connections]
high = 0.8
low = 0.6
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[signals.threads_running]\nhigh = "x"\nlow = 1', "signals.threads_running.high: expected a number, got 'x'"),
        ("[signals.threads_running]\nlow = 1", "signals.threads_running.high: missing (expected a number)"),
        ("[signals.qps]\nhigh = 1\nlow = 0\nfoo = 2", "signals.qps.foo: unknown key (expected one of: canary,"),
        (
            '[signals.x]\nsource = "nope"\nhigh = 1\nlow = 0',
            "signals.x.source: expected one of: mysql, sql, app, prometheus; got 'nope'",
        ),
        ('[signals.x]\nsource = "prometheus"\nhigh = 1\nlow = 0\nquery = "up"', "signals.x.url: missing"),
        ('[signals.x]\nquery = "q"\nhigh = inf\nlow = 0', "signals.x.high: expected a finite number >= 0, got inf"),
        ('[signals.x]\nquery = "q"\nhigh = 1\nlow = 0\nresources = ["a", 1]', "signals.x.resources[1]: expected a"),
        (
            '[resources."shard:2"]\nhosts = ["db-1"]\n[resources."shard:2".signals.connections]\nhigh = 1\nlow = "a"',
            "resources.\"shard:2\".signals.connections.low: expected a number, got 'a'",
        ),
        (
            '[resources."shard:2"]\nhosts = ["db-1"]\n[resources."shard:2".concurrency]\nmax = 2\ndecrease = 1',
            'resources."shard:2".concurrency.decrease: expected a number >= 0.01 and < 1, got 1',
        ),
        ('[queues.q]\npriority = "high"', "queues.q.priority: expected one of: normal, low; got 'high'"),
        ("[queues.q.watermarks.size]\nhigh = 1", "queues.q.watermarks.size: unknown key (expected one of: age, depth)"),
        ('[probe]\ninterval = "10ms"', "probe.interval: expected a duration >= 0.05s"),
    ],
)
def test_a_msgspec_error_names_the_key_as_the_file_spells_it(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra, "easeoff.toml", {})
    assert str(err.value).startswith(f"easeoff.toml: {message}"), str(err.value)


def test_the_entry_at_fault_is_found_among_its_siblings() -> None:
    text = BASE + '[signals.qps]\nhigh = 1\nlow = 0\n[signals.lag]\nhigh = 1\nlow = "no"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "easeoff.toml", {})
    assert err.value.key == "signals.lag.low"


def test_a_signal_with_a_query_is_an_sql_signal_and_others_are_built_in() -> None:
    config = parse_config(BASE + '[signals.orders]\nquery = "select 1"\nhigh = 2\nlow = 1\n', "t.toml", {})
    assert (config.signals["orders"].source, config.signals["orders"].query) == ("sql", "select 1")
    assert config.signals["connections"].source == "mysql"
    with pytest.raises(ConfigError, match=r"signals\.orders\.canary: unknown key"):  # a built-in's key, not a query's
        parse_config(BASE + '[signals.orders]\nquery = "q"\ncanary = "x"\nhigh = 2\nlow = 1\n', "t.toml", {})


def test_a_rate_window_is_any_duration() -> None:
    text = BASE.replace('hosts = ["db-1"]', 'hosts = ["db-1"]\nrate = "6/1h30m"')
    assert parse_config(text, "t.toml", {}).resources["shard:1"].rate == Rate(6, 5400.0)
    assert parse_rate("6/10ms").per == pytest.approx(0.01)  # milliseconds, as everywhere (it read minutes)
    assert parse_rate("3/minutes") == parse_rate("3/min") == Rate(3, 60.0)
