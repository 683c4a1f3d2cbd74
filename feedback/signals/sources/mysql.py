"""The MySQL source: cheap, short-timeout probes of what a host says right now.

A MySQL host is read over a connection its prober keeps between probes: each host has one
prober at a time fleet-wide (signals/cache.py), so that is one connection per host, not one
per worker, and a probe is a few statements rather than a handshake (a third of the CPU at
hundreds of hosts and four probes a second). A kept connection that has gone away is
replaced once; one unused for a while (its target taken over elsewhere) is closed. What is
read depends on the host's roles: every host gives its connection load and query
rate; writers (a primary, each half of a pair) write a pt-heartbeat style row;
hosts that replicate (replicas, each half of a pair) give replication thread state
and lag read from their source's heartbeat row.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import pymysql
import pymysql.cursors
from redis import Redis

from easeoff.feedback.config import REPLICATING_ROLES, WRITER_ROLES, Config, SignalConfig
from easeoff.feedback.mysql_signals import CLOCK, ServerStatus, kept_key, status_signals
from easeoff.feedback.signals.hysteresis import not_a_number
from easeoff.feedback.signals.latency import DEFAULT_CANARY, FALLBACK_CANARY, LatencyWindow
from easeoff.feedback.signals.live_latency import LiveLatency
from easeoff.feedback.signals.probe_connection import PROBE_FAILURES, connect, describe_error
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Notes, Probed, ProbeError, Values, register

# InnoDB's undo backlog, read only where a signal or a budget asks for it: MariaDB has it as a
# status variable, so it rides on the status statement (no extra round trip); where the server
# lacks that (MySQL), from INNODB_METRICS, whose counter MySQL enables by default.
HISTORY = "history_list_length"
HISTORY_VARIABLE = "Innodb_history_list_length"
HISTORY_METRIC = (
    "SELECT COUNT FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len' AND ENABLED = 1"
)
SERVER_QUERY = "SELECT @@GLOBAL.max_connections, @@GLOBAL.server_id, UNIX_TIMESTAMP(NOW(6))"
HEARTBEAT_WRITE = "REPLACE INTO easeoff.heartbeat (server_id, ts) VALUES (@@GLOBAL.server_id, UNIX_TIMESTAMP(NOW(6)))"
HEARTBEAT_READ = "SELECT ts FROM easeoff.heartbeat WHERE server_id = %s"
HEARTBEAT_DDL = (
    "CREATE DATABASE IF NOT EXISTS easeoff",
    "CREATE TABLE IF NOT EXISTS easeoff.heartbeat ("
    " server_id INT UNSIGNED NOT NULL PRIMARY KEY, ts DECIMAL(17,6) NOT NULL) ENGINE=InnoDB",
)
REPLICA_STATUS = "SHOW SLAVE STATUS"
NO_SUCH_TABLE, NO_SUCH_DATABASE, READ_ONLY = 1146, 1049, 1290


@register("mysql")
class MySQLSource:
    """A MySQL host: load, heartbeat, replication and custom SQL, as the host's roles call for."""

    def __init__(self, config: Config, redis: Redis) -> None:
        self.config = config
        self._kept: dict[str, tuple[pymysql.connections.Connection, float]] = {}  # target -> (conn, last used)
        self._idle_after = max(10.0, 5 * config.probe_interval)
        self._latency = config.signals.get("latency")
        self._windows: dict[str, LatencyWindow] = {}  # target -> its canary timings
        self._live = LiveLatency(config)  # budgets' live latency, on the hosts they cover
        self._history = frozenset(h for h in config.hosts if wants_history(config, h))
        self._swept_at = time.monotonic()
        self._sweep_lock = threading.Lock()

    def read(self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]) -> Probed:
        """Over the connection kept for this target (one probe of a target at a time runs here)."""
        roles = frozenset(self.config.host_roles(target))
        custom = self.custom_signals(target)
        self._sweep()
        kept = self._kept.pop(target, None)
        if kept is not None:
            try:
                result = self._read(kept[0], target, roles, previous, context, custom)
            except PROBE_FAILURES as exc:
                _close(kept[0])
                if describe_error(exc).endswith("timeout"):
                    raise ProbeError(describe_error(exc)) from None
                # else it went away (wait_timeout, a restart): one fresh connection below
            else:
                self._kept[target] = (kept[0], time.monotonic())
                return result
        try:
            conn = connect(self.config.hosts[target], self.config.probe_timeout)
        except PROBE_FAILURES as exc:
            raise ProbeError(describe_error(exc)) from None
        try:
            result = self._read(conn, target, roles, previous, context, custom)
        except PROBE_FAILURES as exc:
            _close(conn)
            raise ProbeError(describe_error(exc)) from None
        self._kept[target] = (conn, time.monotonic())
        return result

    def release(self, target: str) -> None:
        """Another process took the target over (or this one stops): close its connection now,
        not when it has idled for a while, so a host sees one probe connection, not one per
        process that ever probed it."""
        kept = self._kept.pop(target, None)
        if kept is not None:
            _close(kept[0])

    def _read(
        self,
        conn: pymysql.connections.Connection,
        target: str,
        roles: frozenset[str],
        previous: Reading | None,
        context: Mapping[str, Reading | None],
        custom: Iterable[SignalConfig],
    ) -> Probed:
        probed = read_host(conn, roles, previous, context, custom, history=target in self._history)
        self._live.read(conn, target, probed.counters, probed.notes)
        if self._latency is not None:
            window = self._windows.setdefault(target, LatencyWindow(self._latency.window))
            timed = time_canary(conn, self._latency.canary, probed.notes)
            probed.counters["canary_s"] = timed
            probed.values["latency"] = window.add(timed)
        return probed

    def _sweep(self) -> None:
        """Close connections this process no longer probes over, about once a second."""
        now = time.monotonic()
        if now - self._swept_at < 1.0 or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept_at = now
            for target, (conn, used) in list(self._kept.items()):
                if now - used > self._idle_after and self._kept.pop(target, None) is not None:
                    _close(conn)
        finally:
            self._sweep_lock.release()

    def custom_signals(self, host: str) -> list[SignalConfig]:
        """Custom SQL signals run on the writers of the resources they cover."""
        chosen = []
        for signal in self.config.signals.values():
            if signal.source != "sql":
                continue
            scope = signal.resources if signal.resources is not None else tuple(self.config.resources)
            if any(host in self.config.resources[r].writers for r in scope if r in self.config.resources):
                chosen.append(signal)
        return chosen


def wants_history(config: Config, host: str) -> bool:
    """Whether a probe of `host` reads InnoDB's history list length: a signal or a budget asks."""
    signal = config.signals.get(HISTORY)
    if signal is not None and signal.source == "mysql":
        scope = signal.resources
        if scope is None or any(host in config.resources[r].hosts for r in scope if r in config.resources):
            return True
    return any(
        r.budget is not None and r.budget.history_list_length is not None and host in r.hosts
        for r in config.resources.values()
    )


def read_host(
    conn: pymysql.connections.Connection,
    roles: frozenset[str],
    previous: Reading | None,
    context: Mapping[str, Reading | None],
    custom: Iterable[SignalConfig],
    history: bool = False,
) -> Probed:
    """The statements of one probe, as the host's roles call for them."""
    with conn.cursor() as cur:
        probed = read_load(cur, previous, history)
        if history and HISTORY not in probed.values:
            read_history_metric(cur, probed.values, probed.notes)
        if roles & WRITER_ROLES:
            write_heartbeat(cur, probed)
        if roles & REPLICATING_ROLES:
            read_replication(conn, cur, probed, context)
        for signal in custom:
            read_custom(cur, signal, probed.values, probed.notes)
    return probed


def time_canary(conn: pymysql.connections.Connection, canary: str | None, notes: Notes) -> float:
    """Seconds the canary statement takes, on the probe's own connection, results read."""
    with conn.cursor() as cur:
        statement = canary or DEFAULT_CANARY
        began = time.perf_counter()
        try:
            cur.execute(statement)
        except pymysql.err.ProgrammingError:
            if canary is not None:
                raise  # the operator's own statement: its error is the probe's
            notes["latency"] = "no heartbeat table here: timing SELECT 1"
            began = time.perf_counter()
            cur.execute(FALLBACK_CANARY)
        cur.fetchall()
        return time.perf_counter() - began


def _close(conn: pymysql.connections.Connection) -> None:
    with contextlib.suppress(*PROBE_FAILURES):  # already gone; the socket is closed either way
        conn.close()


def read_load(cur: Any, previous: Reading | None, history: bool = False) -> Probed:
    """Every built-in status signal (feedback/mysql_signals/: connections as a share of
    max_connections, running threads, queries per second, ...) and, asked for `history`,
    InnoDB's history list length where the status has it. The probe's own connection and
    statement are left out, so an idle server reads 0. The counters keep the server's clock
    and id, and the status counters rates are worked out from on the next probe."""
    signals = status_signals().values()
    variables = sorted({v for signal in signals for v in signal.variables} | ({HISTORY_VARIABLE} if history else set()))
    cur.execute(status_query(tuple(variables)))
    status = {str(name).lower(): float(value) for name, value in cur.fetchall()}
    cur.execute(SERVER_QUERY)
    max_connections, server_id, clock = cur.fetchone()
    server = ServerStatus(status, float(max_connections), float(clock), previous.counters if previous else None)
    probed = Probed(counters={CLOCK: float(clock), "server_id": float(server_id)})
    for signal in signals:
        for variable in signal.kept:
            probed.counters[kept_key(variable)] = status.get(variable.lower(), 0.0)
        value = signal.value(server)
        if value is not None:
            probed.values[signal.name] = value
    if history and HISTORY_VARIABLE.lower() in status:
        probed.values[HISTORY] = status[HISTORY_VARIABLE.lower()]
    return probed


@cache
def status_query(variables: tuple[str, ...]) -> str:
    names = ", ".join(f"'{v}'" for v in variables)  # the signals' own names, never user input
    return f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"


def read_history_metric(cur: Any, values: Values, notes: Notes) -> None:
    """InnoDB's history list length from INNODB_METRICS, for servers whose status lacks it; a
    disabled or missing counter is this signal's failed read (noted: it fails closed)."""
    try:
        cur.execute(HISTORY_METRIC)
        row = cur.fetchone()
    except pymysql.MySQLError as exc:
        notes[HISTORY] = f"not readable: {describe_error(exc)}"
        return
    if not row or row[0] is None:
        notes[HISTORY] = "not readable: trx_rseg_history_len is not enabled (innodb_monitor_enable)"
        return
    values[HISTORY] = float(row[0])


def write_heartbeat(cur: Any, probed: Probed) -> None:
    """pt-heartbeat style: the writer stamps its server id and time; replicas read it back."""
    try:
        cur.execute(HEARTBEAT_WRITE)
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code == READ_ONLY:
            probed.notes["heartbeat"] = "read-only: heartbeat not written"
            return
        if code not in (NO_SUCH_TABLE, NO_SUCH_DATABASE):
            raise
        for ddl in HEARTBEAT_DDL:
            cur.execute(ddl)
        cur.execute(HEARTBEAT_WRITE)
    probed.counters["heartbeat_at"] = probed.counters[CLOCK]


def read_replication(conn: Any, cur: Any, probed: Probed, context: Mapping[str, Reading | None]) -> None:
    """`replication` is 0 while both threads run, else 1; `lag` comes from the source's heartbeat."""
    values, notes = probed.values, probed.notes
    with conn.cursor(pymysql.cursors.DictCursor) as dict_cur:
        dict_cur.execute(REPLICA_STATUS)
        status = dict_cur.fetchone()
    if not status:
        values["replication"] = 1.0
        notes["replication"] = "not replicating (no replica status)"
        return
    io, sql = status.get("Slave_IO_Running"), status.get("Slave_SQL_Running")
    broken = []
    if io != "Yes":
        broken.append(f"io thread {str(io).lower()}")
    if sql != "Yes":
        broken.append(f"sql thread {'stopped' if sql == 'No' else str(sql).lower()}")
    error = status.get("Last_IO_Error") or status.get("Last_SQL_Error")
    if error:
        broken.append(str(error)[:80])
    values["replication"] = 1.0 if (io != "Yes" or sql != "Yes") else 0.0
    if broken:
        notes["replication"] = ", ".join(broken)
    lag = heartbeat_lag(cur, int(status.get("Master_Server_Id") or 0), probed.counters[CLOCK], context)
    if lag is None:
        behind = status.get("Seconds_Behind_Master")
        if behind is not None:
            lag = float(behind)
            notes["lag"] = "from Seconds_Behind_Master (no heartbeat row)"
    if lag is not None:
        values["lag"] = lag


def heartbeat_lag(cur: Any, source_id: int, clock: float, context: Mapping[str, Reading | None]) -> float | None:
    """How far the replica's applied heartbeat trails the source's latest one.

    Measured against the source's last write when the cache knows it, so a healthy
    replica reads ~0 rather than the write cadence; else against the replica's clock.
    """
    if not source_id:
        return None
    try:
        cur.execute(HEARTBEAT_READ, (source_id,))
    except pymysql.MySQLError as exc:
        if exc.args and exc.args[0] in (NO_SUCH_TABLE, NO_SUCH_DATABASE):
            return None
        raise
    row = cur.fetchone()
    if not row:
        return None
    applied = float(row[0])
    written = latest_heartbeat(source_id, context)
    if written is None:
        return max(clock - applied, 0.0)
    return max(written - applied, 0.0)


def latest_heartbeat(server_id: int, context: Mapping[str, Reading | None]) -> float | None:
    for reading in context.values():
        if reading is not None and reading.counters.get("server_id") == server_id:
            return reading.counters.get("heartbeat_at")
    return None


def read_custom(cur: Any, signal: SignalConfig, values: Values, notes: Notes) -> None:
    """gh-ost's --throttle-query: one number from the operator's own SQL."""
    try:
        cur.execute(signal.query)
        row = cur.fetchone()
    except pymysql.MySQLError as exc:
        notes[signal.name] = f"query failed: {describe_error(exc)}"
        return
    # Fail closed: no row, NULL, text or NaN is this signal's failed read (noted), never a 0.
    try:
        number = float(row[0]) if row and row[0] is not None else None
    except (TypeError, ValueError):
        notes[signal.name] = f"query returned {type(row[0]).__name__} (not a number)"
        return
    unjudgeable = "no row or NULL (not a number)" if number is None else not_a_number(number)
    if number is None or unjudgeable is not None:
        notes[signal.name] = f"query returned {unjudgeable}"
    else:
        values[signal.name] = number
