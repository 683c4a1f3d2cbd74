"""A resource's [budget] table: pure parsing, no servers. Each bad form is one line naming its key."""

from __future__ import annotations

import pytest

from easeoff.feedback.config import BudgetConfig, ConfigError, parse_config
from easeoff.feedback.durations import parse_duration

pytestmark = pytest.mark.unit

BASE = """
[mysql.hosts.db-1]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.db-2]
url = "mysql://root@127.0.0.1:3307"
[resources."shard:1"]
primary = "db-1"
replicas = ["db-2"]
[resources."shard:2"]
hosts = ["db-1"]
"""


def budget(table: str, resource: str = "shard:1") -> BudgetConfig | None:
    text = BASE + f'\n[resources."{resource}".budget]\n{table}\n'
    return parse_config(text, "test.toml", {}).resources[resource].budget


def refused(table: str, resource: str = "shard:1", env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f'\n[resources."{resource}".budget]\n{table}\n', "test.toml", env or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_no_budget_table_is_no_budget() -> None:
    assert parse_config(BASE, "test.toml", {}).resources["shard:1"].budget is None


def test_a_multiple_of_the_baseline_with_defaults() -> None:
    found = budget('latency = "1.5x"')
    assert found == BudgetConfig(latency_multiple=1.5)
    assert (found.quantile, found.latency_source, found.window, found.lag) == (0.99, None, 5.0, None)


def test_absolute_times_lag_backlog_and_source() -> None:
    found = budget(
        'latency = "4ms"\nquantile = 0.95\nlatency_source = "canary"\nlag = "5s"\n'
        'history_list_length = 200000\nwindow = "10s"'
    )
    assert found is not None
    assert found.latency == pytest.approx(0.004) and found.latency_multiple is None
    assert (found.quantile, found.latency_source, found.lag, found.history_list_length, found.window) == (
        0.95,
        "canary",
        5.0,
        200000.0,
        10.0,
    )
    number = budget("latency = 0.002")
    assert number is not None and number.latency == 0.002
    backlog_only = budget("history_list_length = 1000", resource="shard:2")
    assert backlog_only is not None and backlog_only.latency is None and backlog_only.history_list_length == 1000


def test_prometheus_source_needs_its_url_and_metric() -> None:
    found = budget(
        'latency = "1.5x"\nlatency_source = "prometheus"\n'
        'prometheus_url = "http://user:pw@prom:9090"\nmetric = "http_request_duration_seconds"'
    )
    assert found is not None and found.metric == "http_request_duration_seconds"
    assert "pw" not in repr(found)
    assert "metric" in refused('latency = "1.5x"\nlatency_source = "prometheus"\nprometheus_url = "http://prom:9090"')
    assert "prometheus_url" in refused('latency = "1.5x"\nlatency_source = "prometheus"\nmetric = "m"')
    env = {"EASEOFF_BUDGET_SHARD_1_PROMETHEUS_URL": "https://prom.example:9090"}
    text = BASE + '\n[resources."shard:1".budget]\nlatency = "1.5x"\nlatency_source = "prometheus"\nmetric = "m"\n'
    from_env = parse_config(text, "test.toml", env).resources["shard:1"].budget
    assert from_env is not None and from_env.prometheus_url == "https://prom.example:9090"


def test_a_prometheus_reading_spans_two_scrapes_and_lags_by_one() -> None:
    """A rate needs two scrapes: at Prometheus's common 15 s, 30 s of the app's histogram; at
    a 1 s scrape the window itself. The controller waits the range and a scrape after a change."""
    head = 'latency = "1.5x"\nlatency_source = "prometheus"\nprometheus_url = "http://prom:9090"\nmetric = "m"\n'
    default = budget(head)
    assert default is not None and default.prometheus_range == 30.0 and default.reading_lag == 45.0
    fast = budget(head + 'scrape_interval = "1s"')
    assert fast is not None and fast.prometheus_range == 5.0 and fast.reading_lag == 6.0
    on_host = budget('latency = "1.5x"\nwindow = "8s"')
    assert on_host is not None and on_host.reading_lag == 8.0


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('latency = "1.5x"\nceiling = 3', "budget.ceiling", "unknown key"),
        ('latency = "1.5x"\nquantile = 1.0', "budget.quantile", "> 0 and < 1"),
        ('latency = "1.5x"\nquantile = 0', "budget.quantile", "> 0 and < 1"),
        ('latency = "1.5x"\nquantile = 1.5', "budget.quantile", "> 0 and < 1"),
        ('latency = "fast"', "budget.latency", "neither a multiple"),
        ('latency = "4 parsecs"', "budget.latency", "neither a multiple"),
        ('latency = "x"', "budget.latency", "multiple of the idle baseline"),
        ('latency = "0.8x"', "budget.latency", "above 1"),
        ("latency = -1", "budget.latency", "neither a multiple"),
        ("latency = true", "budget.latency", "neither a multiple"),
        ('latency = "1.5x"\nlatency_source = "guess"', "budget.latency_source", "server, canary, prometheus"),
        ('latency = "1.5x"\nlag = "soon"', "budget.lag", "bad duration"),
        ('latency = "1.5x"\nhistory_list_length = 0', "budget.history_list_length", ">= 1"),
        ('latency = "1.5x"\nmetric = "m"', "budget.metric", "applies only"),
        ('latency = "1.5x"\nscrape_interval = "1s"', "budget.scrape_interval", "applies only"),
        ("quantile = 0.95", "budget", "needs latency, lag or history_list_length"),
    ],
)
def test_each_bad_form_is_one_line_naming_its_key(table: str, key: str, words: str) -> None:
    message = refused(table)
    assert f'resources."shard:1".{key}' in message and words in message, message


def test_lag_needs_replication() -> None:
    message = refused('latency = "1.5x"\nlag = "5s"', resource="shard:2")
    assert 'resources."shard:2".budget.lag' in message and "replicas" in message


def test_durations_take_milliseconds() -> None:
    assert parse_duration("4ms") == pytest.approx(0.004)
    assert parse_duration("10m") == 600  # minutes still minutes
