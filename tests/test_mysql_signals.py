"""The built-in status signals (feedback/mysql_signals/): each module's SIGNAL is found by name,
its arithmetic is right on a given status, and a probe of the real MariaDB reads every one."""

from __future__ import annotations

import pymysql
import pytest

from easeoff.feedback.config import BUILTIN_SIGNALS, HOST_SIGNALS
from easeoff.feedback.mysql_signals import ServerStatus, gauge, rate, status_signals
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources.mysql import read_load
from tests.conftest import MYSQL


@pytest.mark.unit
def test_every_status_signal_is_a_built_in_host_signal() -> None:
    names = set(status_signals())
    assert {"connections", "threads_running", "qps"} <= names
    assert names <= set(HOST_SIGNALS) <= set(BUILTIN_SIGNALS)


@pytest.mark.unit
def test_a_gauge_leaves_the_probes_own_share_out_and_never_reads_below_zero() -> None:
    signal = gauge("t", "Threads_running", own=1.0)
    assert signal.value(ServerStatus({"threads_running": 4.0}, 100, 10.0)) == 3.0
    assert signal.value(ServerStatus({"threads_running": 0.0}, 100, 10.0)) == 0.0
    assert signal.value(ServerStatus({}, 100, 10.0)) is None  # not readable here: fails closed


@pytest.mark.unit
def test_a_rate_is_per_second_of_the_servers_clock_and_needs_a_previous_probe() -> None:
    signal = rate("q", "Questions")
    assert signal.value(ServerStatus({"questions": 500.0}, 100, 10.0)) is None
    previous = {"questions": 300.0, "clock": 8.0}
    assert signal.value(ServerStatus({"questions": 500.0}, 100, 10.0, previous)) == 100.0
    assert signal.value(ServerStatus({"questions": 100.0}, 100, 10.0, previous)) == 0.0  # a restart's reset
    assert signal.value(ServerStatus({"questions": 500.0}, 100, 8.0, previous)) is None  # no time passed


@pytest.mark.unit
def test_connections_are_a_share_of_max_connections_less_the_probes_own() -> None:
    signal = status_signals()["connections"]
    assert signal.value(ServerStatus({"threads_connected": 51.0}, 100, 1.0)) == 0.5


@pytest.mark.parametrize("name", sorted(status_signals()))
def test_a_probe_of_real_mariadb_reads_it(name: str) -> None:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            first = read_load(cur, None)
            previous = Reading(
                host="db1", taken_at=first.counters["clock"], values=first.values, counters=first.counters
            )
            second = read_load(cur, previous).values
    finally:
        conn.close()
    assert name in second and second[name] >= 0.0, second
