"""The live site's latency at a budget's quantile, read by each host's prober.

Two sources on the host itself, chosen per budget (`latency_source`):

- "server": the live site's own statements, from MariaDB's query_response_time plugin. Its
  table holds cumulative counts per response-time bucket; each probe diffs it with the last
  and keeps the deltas of the last `window` seconds, and the quantile is taken over their sum
  (quantiles.bucket_quantile). The probe's own statements are counted there too: as many as the
  probe ran since its last read are taken out of the fastest buckets, which can only raise the
  quantile (they are the cheapest statements the server runs; if they were not, it is the live
  site's fast ones that go, and the estimate errs high, the safe way). The prober never installs
  the plugin or turns its stats on: without them the reading notes why and times a canary.
- "canary": a burst of cheap canary statements per probe, their timings kept for `window`
  seconds, the burst sized so the window holds the samples its quantile needs
  (quantiles.samples_needed) — at most MAX_BURST a probe, and the reading says what it cost.

Windows live in the prober's process (a host has one prober fleet-wide); a prober that takes
a host over starts afresh, so its first `window` seconds read None (hold), never a guess. The
value is stored in the host's reading's `counters` under `live_key(budget)` (the probe's
bookkeeping, not a signal), with the number of samples it rests on beside it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import pymysql

from easeoff.feedback.config import BudgetConfig, Config
from easeoff.feedback.signals.latency import DEFAULT_CANARY, FALLBACK_CANARY
from easeoff.feedback.signals.quantiles import bucket_quantile, sample_quantile, samples_needed

RESPONSE_TIMES = "SELECT TIME, COUNT FROM information_schema.QUERY_RESPONSE_TIME"
RESPONSE_TIME_STATS = "SELECT @@GLOBAL.query_response_time_stats"
RECHECK_EVERY = 30.0  # seconds between checks that the plugin is there and counting
MAX_BURST = 100  # canary statements one probe may spend on a budget's window
BURST_MARGIN = 1.25  # a burst a quarter larger than the bare need: probes run late, windows move
NOTE = "budget_latency"  # the reading's note on where the budget's latency came from
UNKNOWN_TABLE, UNKNOWN_VARIABLE = 1109, 1193
Buckets = list[tuple[float, float]]


def live_key(budget: BudgetConfig) -> str:
    """Where a host's reading's counters keep its live latency at this budget's quantile and window."""
    return f"budget_latency@{budget.quantile:g}/{budget.window:g}s"


def samples_key(budget: BudgetConfig) -> str:
    """... and how many statements (or canary timings) that quantile rests on."""
    return f"budget_samples@{budget.quantile:g}/{budget.window:g}s"


class BucketWindow:
    """The deltas of a server's cumulative response-time counts over the last `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.bounds: tuple[float, ...] = ()
        self.previous: tuple[float, ...] | None = None
        self.deltas: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, at: float, buckets: Buckets, own: int = 0) -> None:
        """A new cumulative snapshot taken at `at` (monotonic); `own`: statements the probe ran since
        the last one. A flush (counts going down) or new bucket bounds start the window afresh."""
        bounds = tuple(b for b, _ in buckets)
        counts = tuple(c for _, c in buckets)
        previous, self.previous = self.previous, counts
        if previous is None or bounds != self.bounds:
            self.bounds = bounds
            self.deltas.clear()
            return
        delta = [now - before for now, before in zip(counts, previous, strict=True)]
        if any(d < 0 for d in delta):  # flushed (query_response_time_flush): nothing to diff against
            self.deltas.clear()
            return
        for i in range(len(delta)):  # the probe's own statements out of the fastest buckets
            taken = min(delta[i], own)
            delta[i] -= taken
            own -= int(taken)
            if own <= 0:
                break
        self.deltas.append((at, tuple(delta)))
        while self.deltas and self.deltas[0][0] <= at - self.seconds:
            self.deltas.popleft()

    def summed(self, seconds: float, now: float) -> Buckets:
        totals = [0.0] * len(self.bounds)
        for at, delta in self.deltas:
            if at > now - seconds:
                totals = [t + d for t, d in zip(totals, delta, strict=True)]
        return list(zip(self.bounds, totals, strict=True))


class SampleWindow:
    """Canary timings of the last `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, timings: Iterable[float]) -> None:
        self.samples.extend((at, t) for t in timings)
        while self.samples and self.samples[0][0] <= at - self.seconds:
            self.samples.popleft()

    def within(self, seconds: float, now: float) -> list[float]:
        return [t for at, t in self.samples if at > now - seconds]


def parse_buckets(rows: Sequence[Sequence[Any]]) -> Buckets:
    """QUERY_RESPONSE_TIME's rows: `TIME` is a bucket's upper bound in seconds, `TOO LONG` the last."""
    buckets = []
    for bound, count in rows:
        text = str(bound).strip()
        buckets.append((math.inf if text == "TOO LONG" else float(text), float(count)))
    return buckets


def burst_size(budgets: Iterable[BudgetConfig], interval: float) -> int:
    """Canary statements per probe so each budget's window holds its quantile, at most MAX_BURST."""
    need = max((samples_needed(b.quantile) * interval / b.window for b in budgets), default=0.0)
    return min(MAX_BURST, max(1, math.ceil(need * BURST_MARGIN)))


class LiveLatency:
    """The live-latency windows of the hosts this process probes, for their budgets."""

    def __init__(self, config: Config) -> None:
        self.interval = config.probe_interval
        latency = config.signals.get("latency")
        self.canary = latency.canary if latency is not None else None
        self.by_host: dict[str, list[BudgetConfig]] = {}
        for resource in config.resources.values():
            if resource.budget is not None and resource.budget.read_on_hosts:
                for host in resource.hosts:
                    if resource.budget not in self.by_host.setdefault(host, []):
                        self.by_host[host].append(resource.budget)
        self._server: dict[str, BucketWindow] = {}
        self._canary: dict[str, SampleWindow] = {}
        self._checked: dict[str, tuple[float, str | None]] = {}  # host -> (when, why the server cannot say)
        self._statements: dict[str, tuple[int, int]] = {}  # host -> (connection id, its statements then)
        self._fallback: dict[str, str] = {}  # host -> the canary timed there instead (no heartbeat table)

    def read(self, conn: Any, host: str, counters: dict[str, float], notes: dict[str, str]) -> None:
        """Add this host's live latency for each of its budgets to the probe's counters (a budget
        reads them: they are no signal of their own)."""
        budgets = self.by_host.get(host)
        if not budgets:
            return
        now = time.monotonic()
        server = [b for b in budgets if b.latency_source in (None, "server")]
        canary = [b for b in budgets if b.latency_source == "canary"]
        if server:
            why = self._server_cannot(conn, host, now)
            if why is None:
                self._read_server(conn, host, server, counters, now)
            else:
                notes[NOTE] = f"canary ({why})"
                canary += server
        if canary:
            self._read_canary(conn, host, canary, counters, notes, now)

    def _server_cannot(self, conn: Any, host: str, now: float) -> str | None:
        """Why the host's own statements cannot be read (no plugin, stats off), checked every so often."""
        checked = self._checked.get(host)
        if checked is not None and now - checked[0] < RECHECK_EVERY:
            return checked[1]
        why: str | None = None
        with conn.cursor() as cur:
            try:
                cur.execute(RESPONSE_TIME_STATS)
                row = cur.fetchone()
                if not row or str(row[0]).upper() not in ("1", "ON"):
                    why = "query_response_time_stats is OFF"
            except pymysql.MySQLError as exc:
                if not exc.args or exc.args[0] not in (UNKNOWN_VARIABLE, UNKNOWN_TABLE):
                    raise
                why = "query_response_time plugin not installed"
        self._checked[host] = (now, why)
        return why

    def _read_server(
        self, conn: Any, host: str, budgets: list[BudgetConfig], counters: dict[str, float], now: float
    ) -> None:
        with conn.cursor() as cur:
            cur.execute(RESPONSE_TIMES)
            buckets = parse_buckets(cur.fetchall())
        own = self._own_statements(conn, host)
        window = self._server.setdefault(host, BucketWindow(max(b.window for b in budgets)))
        window.add(now, buckets, own)
        for budget in budgets:
            summed = window.summed(budget.window, now)
            counters[samples_key(budget)] = sum(count for _, count in summed)
            value = bucket_quantile(summed, budget.quantile)
            if value is not None:
                counters[live_key(budget)] = value

    def _own_statements(self, conn: Any, host: str) -> int:
        """Statements this probe connection ran since the last response-time read (itself
        included); all of them on a connection new since then."""
        count = int(getattr(conn, "statements", 0))
        last = self._statements.get(host)
        self._statements[host] = (id(conn), count)
        if last is None or last[0] != id(conn):
            return count
        return max(count - last[1], 0)

    def _read_canary(
        self,
        conn: Any,
        host: str,
        budgets: list[BudgetConfig],
        counters: dict[str, float],
        notes: dict[str, str],
        now: float,
    ) -> None:
        burst = burst_size(budgets, self.interval)
        window = self._canary.setdefault(host, SampleWindow(max(b.window for b in budgets)))
        window.add(now, [self._time_canary(conn, host) for _ in range(burst)])
        counters["canary_burst"] = float(burst)
        for budget in budgets:
            samples = window.within(budget.window, now)
            counters[samples_key(budget)] = float(len(samples))
            value = sample_quantile(samples, budget.quantile)
            if value is not None:
                counters[live_key(budget)] = value
            elif burst >= MAX_BURST:
                notes[NOTE] = (
                    f"canary cannot hold the p{budget.quantile * 100:g}: it needs"
                    f" {samples_needed(budget.quantile)} samples in {budget.window:g}s,"
                    f" {MAX_BURST} a probe every {self.interval:g}s gives {len(samples)}"
                )

    def _time_canary(self, conn: Any, host: str) -> float:
        statement = self._fallback.get(host) or self.canary or DEFAULT_CANARY
        with conn.cursor() as cur:
            began = time.perf_counter()
            try:
                cur.execute(statement)
            except pymysql.err.ProgrammingError:
                if statement != DEFAULT_CANARY:
                    raise  # the operator's own statement: its error is the probe's
                self._fallback[host] = FALLBACK_CANARY  # no heartbeat table here: SELECT 1 from now on
                began = time.perf_counter()
                cur.execute(FALLBACK_CANARY)
            cur.fetchall()
            return time.perf_counter() - began
