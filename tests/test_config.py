"""Config parsing: pure, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from easeoff.feedback.config import ConfigError, load_config, packaged_example_path, parse_config

pytestmark = pytest.mark.unit

GOOD = """
[redis]
url = "redis://127.0.0.1:6379/0"
[mysql.hosts.db-1]
url = "mysql://probe:s3cret@10.0.0.5:3307"
[resources."shard:1"]
hosts = ["db-1"]
[signals.connections]
high = 0.8
low = 0.6
[queues.heavy]
resources = ["shard:1"]
"""


def parse(text: str, env: dict[str, str] | None = None):
    return parse_config(text, "test.toml", env or {})


def test_good_config_parses_with_defaults() -> None:
    config = parse(GOOD)
    host = config.hosts["db-1"]
    assert (host.host, host.port, host.user, host.password) == ("10.0.0.5", 3307, "probe", "s3cret")
    assert config.probe_interval == 1.0
    assert (config.replica_acks, config.replica_ack_timeout) == (0, 1.0)
    assert config.switch_stale_after == 86400
    assert parse(GOOD + '\n[switches]\nstale_after = "12h"\n').switch_stale_after == 12 * 3600
    assert parse(GOOD + "\n[switches]\nstale_after = 600\n").switch_stale_after == 600
    assert config.hosts_for(["shard:1"]) == ("db-1",)
    assert config.queue_resources("heavy") == ("shard:1",)
    assert config.queue_resources("unknown") == ()


def test_environment_overrides_urls_and_passwords() -> None:
    env = {
        "EASEOFF_REDIS_URL": "redis://10.1.1.1:6380/2",
        "EASEOFF_MYSQL_DB_1_PASSWORD": "from-env",
    }
    config = parse(GOOD, env)
    assert config.redis_url == "redis://10.1.1.1:6380/2"
    assert config.hosts["db-1"].password == "from-env"


def test_passwords_stay_out_of_reprs() -> None:
    config = parse(GOOD.replace("127.0.0.1:6379", "user:redispw@127.0.0.1:6379"))
    assert "s3cret" not in repr(config)
    assert "redispw" not in repr(config)
    assert "redispw" not in config.redis_url_redacted


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[redis\nurl=1", "", "not valid TOML"),
        (GOOD.replace("high = 0.8", 'high = "lots"'), "signals.connections.high", "expected a number"),
        (GOOD.replace("low = 0.6", "low = 0.9"), "signals.connections.low", "must not exceed high"),
        (GOOD.replace('hosts = ["db-1"]', 'hosts = ["db-9"]'), 'resources."shard:1".hosts', "unknown host"),
        (GOOD.replace("[signals.connections]", "[signals.load_avg]"), "signals.load_avg", "unknown built-in signal"),
        (GOOD + "\n[probe]\ninterval = -1\n", "probe.interval", ">= 0.05"),
        (GOOD + "\n[probe]\nintervall = 2\n", "probe.intervall", "unknown key"),
        (GOOD.replace('resources = ["shard:1"]', 'resources = ["shard:7"]'), "queues.heavy.resources", "unknown"),
        (GOOD.replace("mysql://probe", "postgres://probe"), "mysql.hosts.db-1.url", "mysql://"),
        (GOOD.replace("redis://127", "http://127"), "redis.url", "redis://"),
        (GOOD.replace('6379/0"', '6379/0"\nreplica_acks = 1.5'), "redis.replica_acks", "whole number"),
        (GOOD.replace('hosts = ["db-1"]', 'hosts = ["db-1"]\nrate = "lots"'), 'resources."shard:1".rate', "120/min"),
        (GOOD.replace('6379/0"', '6379/0"\nreplica_ack_timeout = 0'), "redis.replica_ack_timeout", ">= 0.001"),
        (GOOD + '\n[switches]\nstale_after = "a while"\n', "switches.stale_after", "bad duration"),
        (GOOD + "\n[switches]\nstale_after = 0\n", "switches.stale_after", "above 0"),
        (GOOD + "\n[switches]\nstale = 1\n", "switches.stale", "unknown key"),
    ],
)
def test_errors_name_file_and_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert err.value.key == key
    assert problem in str(err.value)
    assert str(err.value).startswith("test.toml: ")
    assert "\n" not in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_shipped_example_is_valid() -> None:
    config = load_config(packaged_example_path())
    assert "db1" in config.hosts
    assert {"connections", "threads_running"} <= set(config.signals)


def test_resources_follow_arguments_however_they_are_passed() -> None:
    from easeoff.tasks.catalog import archive_in_chunks, recount_users

    assert recount_users.resources_for((3, 1, 10), {}) == ("shard:3",)
    assert recount_users.resources_for((), {"shard": 4, "first_user": 1, "last_user": 2}) == ("shard:4",)
    assert archive_in_chunks.resources_for((5,), {"batch_size": 10}) == ("shard:5",)
