"""The gate over a topology: pairs, replicas worst-first, hosts out, traffic, critical. Pure, no servers."""

from __future__ import annotations

import pytest

from easeoff.feedback.config import parse_config
from easeoff.feedback.reasons import texts
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import judge, strain_reasons

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    """
[probe]
interval = 1.0
[mysql.hosts.a]
url = "mysql://root@10.0.0.1"
[mysql.hosts.b]
url = "mysql://root@10.0.0.2"
[mysql.hosts.r1]
url = "mysql://root@10.0.0.3"
[mysql.hosts.r2]
url = "mysql://root@10.0.0.4"
[mysql.hosts.c]
url = "mysql://root@10.0.0.5"
[resources."shard:1"]
pair = ["a", "b"]
replicas = ["r1", "r2"]
ignore_worst = 1
[resources."shard:2"]
primary = "c"
[resources."shard:2".signals.connections]
high = 0.5
low = 0.4
[signals.connections]
high = 0.8
low = 0.6
[signals.lag]
high = 2.0
low = 1.0
critical = 10.0
[signals.backlog]
query = "SELECT COUNT(*) FROM backlog"
high = 1000
low = 500
[signals.web]
source = "app"
high = 100
low = 50
""",
    "topology.toml",
    {},
)
NOW = 1_000_000.0


def host(name: str, strained: dict[str, bool] | None = None, notes: dict[str, str] | None = None, **values: float):
    base = {"connections": 0.1}
    if name in ("a", "b", "r1", "r2"):
        base |= {"replication": 0.0, "lag": 0.1}
    base |= values
    flags = {k: False for k in base} | (strained or {})
    return Reading(host=name, taken_at=NOW - 0.2, values=base, strained=flags, notes=notes or {})


def healthy(**overrides: Reading | None) -> Snapshot:
    readings: dict[str, Reading | None] = {n: host(n) for n in ("a", "b", "r1", "r2", "c")}
    readings["app:web"] = Reading(host="app:web", taken_at=NOW - 0.2, values={"web": 10}, strained={"web": False})
    readings.update(overrides)
    return Snapshot(readings)


def test_config_shapes() -> None:
    shard1 = CONFIG.resources["shard:1"]
    assert shard1.pair and shard1.writers == ("a", "b") and shard1.replicas == ("r1", "r2")
    assert shard1.role("a") == "pair" and shard1.role("r1") == "replica"
    assert CONFIG.resources["shard:2"].role("c") == "primary"
    assert CONFIG.thresholds("connections", "c").high == 0.5
    assert CONFIG.thresholds("connections", "a").high == 0.8
    assert CONFIG.host_roles("a") == frozenset({"pair"})
    assert CONFIG.probe_targets[-1] == "app:web"


def test_all_healthy_admits_both_shards() -> None:
    assert judge(["shard:1", "shard:2"], healthy(), CONFIG, NOW).admit


def test_one_lagging_replica_is_ignored_two_are_not() -> None:
    lagging = host("r1", {"lag": True}, lag=5.0)
    assert judge(["shard:1"], healthy(r1=lagging), CONFIG, NOW).admit
    both = healthy(r1=lagging, r2=host("r2", {"lag": True}, lag=3.0))
    verdict = judge(["shard:1"], both, CONFIG, NOW)
    # The worst (r1, lag 5) is ignored; the next worst still holds the shard.
    assert verdict.texts == ["lag:r2 3 > high 2"]
    assert judge(["shard:2"], both, CONFIG, NOW).admit  # strain on shard 1 holds only shard 1


def test_stopped_replication_names_the_thread() -> None:
    stopped = host("b", {"replication": True}, notes={"replication": "sql thread stopped"}, replication=1.0)
    verdict = judge(["shard:1"], healthy(b=stopped), CONFIG, NOW)
    assert verdict.texts == ["replication:b (sql thread stopped)"]


def test_pair_half_unreachable_or_out_holds_the_shard() -> None:
    down = Reading(host="b", taken_at=NOW - 0.2, error="2003 unreachable")
    assert judge(["shard:1"], healthy(b=down), CONFIG, NOW).texts == ["probe_error:b (2003 unreachable)"]
    out = Snapshot(healthy().readings, hosts_out={"a": "disk swap"})
    assert judge(["shard:1"], out, CONFIG, NOW).texts == ["host_out:a (disk swap)"]


def test_replica_out_of_production_leaves_the_aggregate() -> None:
    snapshot = healthy(r1=host("r1", {"lag": True}, lag=5.0), r2=host("r2", {"lag": True}, lag=4.0))
    assert not judge(["shard:1"], snapshot, CONFIG, NOW).admit
    without_r2 = Snapshot(snapshot.readings, hosts_out={"r2": "rebuilding"})
    assert judge(["shard:1"], without_r2, CONFIG, NOW).admit  # r1 alone is within ignore_worst


def test_resource_override_thresholds_apply_to_its_hosts() -> None:
    busy = host("c", {"connections": True}, connections=0.55)
    assert judge(["shard:2"], healthy(c=busy), CONFIG, NOW).texts == ["connections:c 0.55 > high 0.5"]


def test_custom_query_signal_and_its_failure() -> None:
    full = host("a", {"backlog": True}, backlog=5000)
    assert judge(["shard:1"], healthy(a=full), CONFIG, NOW).texts == ["backlog:a 5000 > high 1000"]
    broken = host("a", notes={"backlog": "query failed: 1146 no such table"})
    assert judge(["shard:1"], healthy(a=broken), CONFIG, NOW).texts == ["backlog:a query failed: 1146 no such table"]


def test_global_app_traffic_holds_everything() -> None:
    busy = Reading(host="app:web", taken_at=NOW - 0.2, values={"web": 150}, strained={"web": True})
    for resources in (["shard:1"], ["shard:2"], []):
        assert texts(strain_reasons(resources, healthy(**{"app:web": busy}), CONFIG, NOW)) == ["web:app 150 > high 100"]


def test_critical_tier_is_reported_separately() -> None:
    deep = host("r1", {"lag": True}, lag=12.0)
    snapshot = healthy(r1=deep, r2=host("r2", {"lag": True}, lag=3.0))
    verdict = judge(["shard:1"], snapshot, CONFIG, NOW)
    assert texts(verdict.critical) == ["lag:r1 12 > critical 10"]
