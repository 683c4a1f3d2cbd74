"""What a probe says and whom it reads, decided without servers: the one-line error a failed
probe leaves in its reason (never the server's whole message), which hosts a probe asks for
InnoDB's history list length, and which keys keep a host probed at full pace.
test_probe_tls.py, test_history_list_length.py and test_probe_demand.py show them on real servers."""

from __future__ import annotations

import pymysql
import pytest
from rq import Queue
from rq.registry import StartedJobRegistry

from easeoff.feedback import keys
from easeoff.feedback.config import parse_config
from easeoff.feedback.signals.demand import demand_keys, dormant_pace, follows_demand, pace_of
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources.mysql import describe_error, wants_history

pytestmark = pytest.mark.unit

HOSTS = """
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.db2]
url = "mysql://root@127.0.0.1:3307"
[mysql.hosts.db3]
url = "mysql://root@127.0.0.1:3308"
[resources."shard:1"]
primary = "db1"
replicas = ["db2"]
[resources."shard:2"]
hosts = ["db3"]
"""


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (TimeoutError("timed out"), "timeout"),  # socket.timeout is TimeoutError
        (
            pymysql.err.OperationalError(
                2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
            ),
            "2003 unreachable",
        ),
        (pymysql.err.OperationalError(2013, "Lost connection to MySQL server (timed out)"), "2013 timeout"),
        (
            pymysql.err.OperationalError(
                2003,
                "Can't connect to MySQL server on 'db1' ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                "failed: Hostname mismatch, certificate is not valid for 'db1'. (_ssl.c:1006))",
            ),
            "2003 tls: certificate verify failed: Hostname mismatch, certificate is not valid for 'db1'",
        ),
        (pymysql.err.OperationalError(1045, "Access denied for user 'probe'@'10.0.0.7' " + "x" * 200), None),
        (pymysql.err.InterfaceError("(0, '')"), "InterfaceError"),
        (ValueError("mysql://probe:hunter2@db1"), "ValueError"),  # a message that is not MySQL's: its class only
    ],
)
def test_a_failed_probe_is_one_short_line(error: BaseException, says: str | None) -> None:
    text = describe_error(error)
    if says is None:  # another server error: its code and the start of its message
        assert text.startswith("1045 Access denied for user 'probe'") and len(text) == len("1045 ") + 80
    else:
        assert text == says
    assert "\n" not in text and "hunter2" not in text


def test_a_probe_reads_the_history_list_length_only_where_a_signal_or_a_budget_asks() -> None:
    plain = parse_config(HOSTS, "probe.toml", {})
    assert [h for h in ("db1", "db2", "db3") if wants_history(plain, h)] == []
    signal = parse_config(
        HOSTS + '[signals.history_list_length]\nhigh = 5000\nlow = 1000\nresources = ["shard:2"]\n', "p.toml", {}
    )
    assert [h for h in ("db1", "db2", "db3") if wants_history(signal, h)] == ["db3"]
    budget = parse_config(HOSTS + '[resources."shard:1".budget]\nhistory_list_length = 200000\n', "p.toml", {})
    assert [h for h in ("db1", "db2", "db3") if wants_history(budget, h)] == ["db1", "db2"]


def test_a_host_is_wanted_through_its_resources_keys_and_its_queues() -> None:
    config = parse_config(
        "[probe]\ninterval = 0.5\ndormant_interval = 5\n"
        + HOSTS
        + '[queues.heavy]\n[queues.recount]\nresources = ["shard:2"]\n',
        "probe.toml",
        {},
    )
    assert follows_demand(config) and dormant_pace(config) == 5.0
    found = demand_keys(config)
    assert found["db1"] == found["db2"]  # a pair's hosts share their resource's keys
    assert keys.WANTED.format(resource="shard:1") in found["db1"] and keys.leases_key("shard:1") in found["db1"]
    assert keys.parked_key("shard:1") in found["db1"]
    recount = Queue.redis_queue_namespace_prefix + "recount"
    assert recount in found["db3"] and StartedJobRegistry.key_template.format("recount") in found["db3"]
    assert recount not in found["db1"] and not any("heavy" in k for k in found["db3"])  # heavy names no resource
    reading = Reading("db3", 100.0)
    assert pace_of(reading, config) == 0.5 and pace_of(Reading("db3", 100.0, dormant=True), config) == 5.0


def test_demand_following_is_off_when_the_dormant_interval_is_the_interval() -> None:
    config = parse_config("[probe]\ninterval = 1\ndormant_interval = 1\n" + HOSTS, "probe.toml", {})
    assert not follows_demand(config) and demand_keys(config) == {}  # every host always wanted
