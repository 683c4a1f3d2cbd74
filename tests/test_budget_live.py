"""A budget's live latency at its quantile, on a real sandbox MariaDB: from the server's own
query_response_time counts (known-latency statements land the p99 in the right bucket; the
probe's own statements are not counted; without the plugin the probe says so and times a
canary), and from a canary that refuses (None) a quantile its window cannot hold."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from easeoff.feedback.config import Config, parse_config
from easeoff.feedback.signals.live_latency import MAX_BURST, NOTE, LiveLatency, live_key, samples_key
from easeoff.feedback.signals.probe_connection import connect
from tests.sandbox_support import sandbox_mod

pytestmark = pytest.mark.slow

FAST, SLOW = 400, 10  # 2.4% of statements sleep 10 ms: the p99 is one of them


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One sandbox primary (this test installs the plugin on it; nothing else runs there)."""
    base = int(os.environ.get("EASEOFF_SANDBOX_PORT", "3500"))
    box = sandbox_mod.Sandbox(tmp_path_factory.mktemp("live") / "sb", base_port=sandbox_mod.free_base_port(base))
    try:
        box.up(shards=[1], replicas=0, shape="primary")
        yield box
    finally:
        box.down()


def config_for(box: Any, budget: str, interval: float = 1.0) -> Config:
    text = f"""
[probe]
interval = {interval}
[mysql.hosts.db1]
url = "{box.url("s1a")}"
[resources."shard:1"]
primary = "db1"
[resources."shard:1".budget]
{budget}
"""
    return parse_config(text, "test.toml", {})


def run(box: Any, statements: list[str]) -> None:
    conn = box.connect("s1a")
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                cur.fetchall()
    finally:
        conn.close()


def sql(box: Any, statement: str) -> None:
    run(box, [statement])


def probe(live: LiveLatency, config: Config) -> tuple[dict[str, float], dict[str, str], Any]:
    conn = connect(config.hosts["db1"], 2.0)
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    live.read(conn, "db1", values, notes)
    return values, notes, conn


def test_server_quantile_from_query_response_time(server: Any) -> None:
    budget = 'latency = "1.5x"\nquantile = 0.99\nwindow = "60s"'
    config = config_for(server, budget)
    spec = config.resources["shard:1"].budget
    assert spec is not None
    value_at, samples_at = live_key(spec), samples_key(spec)

    # No plugin: the reading says so and the budget's latency comes from a canary burst.
    values, notes, conn = probe(LiveLatency(config), config)
    conn.close()
    assert "plugin not installed" in notes[NOTE], notes
    assert values["canary_burst"] >= 1 and values[samples_at] == values["canary_burst"]

    sql(server, "INSTALL SONAME 'query_response_time'")
    sql(server, "SET GLOBAL query_response_time_stats = ON")
    sql(server, "SET GLOBAL query_response_time_range_base = 10")
    sql(server, "SET GLOBAL query_response_time_flush = 1")

    # A slow tail of 2.4%: the p99 is in the 10-100 ms bucket that SLEEP(0.01) lands in.
    live = LiveLatency(config)
    values, notes, conn = probe(live, config)  # the first snapshot: nothing to diff yet
    assert NOTE not in notes and value_at not in values, (values, notes)
    run(server, ["SELECT 1"] * FAST + ["SELECT SLEEP(0.01)"] * SLOW)
    for _ in range(20):  # the probe's own statements (20 reads' worth) are not the live site's
        live.read(conn, "db1", values, notes)
    conn.close()
    assert FAST + SLOW <= values[samples_at] <= FAST + SLOW + 3, values  # + the test connection's own set-up
    assert 0.01 < values[value_at] <= 0.1, values

    # A slow tail of 0.25%: the p99 is among the fast statements, under 1 ms.
    live = LiveLatency(config)
    values, notes, conn = probe(live, config)
    run(server, ["SELECT 1"] * 2000 + ["SELECT SLEEP(0.01)"] * 5)
    live.read(conn, "db1", values, notes)
    conn.close()
    assert values[value_at] <= 0.001, values

    # Too few statements to hold a p99 (200 needed): no value at all, however fast they were.
    live = LiveLatency(config)
    values, notes, conn = probe(live, config)
    run(server, ["SELECT 1"] * 50)
    live.read(conn, "db1", values, notes)
    conn.close()
    assert value_at not in values and values[samples_at] < 200, values

    # Stats switched off: noted, and the canary stands in.
    sql(server, "SET GLOBAL query_response_time_stats = OFF")
    values, notes, conn = probe(LiveLatency(config), config)
    conn.close()
    assert "query_response_time_stats is OFF" in notes[NOTE] and values["canary_burst"] >= 1


def test_canary_refuses_a_quantile_its_window_cannot_hold(server: Any) -> None:
    # A p99.9 over 5 s needs 2000 timings; MAX_BURST a probe every second gives 100 at first.
    config = config_for(server, 'latency = "4ms"\nquantile = 0.999\nlatency_source = "canary"\nwindow = "5s"')
    spec = config.resources["shard:1"].budget
    assert spec is not None
    values, notes, conn = probe(LiveLatency(config), config)
    conn.close()
    assert values["canary_burst"] == MAX_BURST and values[samples_key(spec)] == MAX_BURST
    assert live_key(spec) not in values
    assert "cannot hold the p99.9" in notes[NOTE], notes

    # A p95 over 5 s needs 40: one probe's burst at a 1 s interval holds it, and the value is a timing.
    config = config_for(server, 'latency = "4ms"\nquantile = 0.95\nlatency_source = "canary"\nwindow = "5s"')
    spec = config.resources["shard:1"].budget
    assert spec is not None
    live = LiveLatency(config)
    values, notes, conn = probe(live, config)
    conn.close()
    assert values["canary_burst"] == 10  # 40 a window / 5 probes a window, a quarter more
    assert live_key(spec) not in values  # 10 of the 40 it needs
    conn = connect(config.hosts["db1"], 2.0)
    for _ in range(3):
        live.read(conn, "db1", values, notes)
    conn.close()
    assert values[samples_key(spec)] == 40 and 0 < values[live_key(spec)] < 0.1, values
