"""Does the probe load on MySQL grow with the fleet? MySQL probe statements per second,
counted on the server, with 1 and with 8 gated workers at the same probe interval (1 s, or
`--interval`).

The workers probe a private mariadbd that the script starts (scripts/sandbox.py) and
stops: the shared MariaDB on 3306 also serves other people's tests and benchmarks, whose
SHOW STATUS would be counted as ours (`--shared` probes it anyway, measuring a window
again when it saw more statements than the fleet refreshed, and subtracting the rate seen
with no worker running). Counted as deltas of `Com_show_status` (each probe runs one SHOW
GLOBAL STATUS; so does each of our own reads, and the closing read of a window is
subtracted) over windows whose edges fall just after a probe: a window opens when a fresh
reading shows up in Redis and closes at the first one seen after `--window` seconds, so it
holds whole probe periods and the count is not quantized by where the edges fall. As a
cross-check, the fleet's refreshes are also counted in Redis (each probe rewrites the
host's reading with a new `taken_at`; polled every 10 ms, so two probes within 10 ms
would show as one), and so are the server's new connections (its prober keeps one: ~0).

The fleet grows and shrinks in place, 1 → 8 → 1 → 8 workers (shrinking keeps the newest,
so each 1-worker window has a fresh process and a fresh random probe slack), first while
the workers idle-poll an empty queue (not burst), then while they drain a queue of no-op
jobs, topped up between windows. Rates are pooled per mode (total probes / total seconds).

Last line: `probe_rate_ratio X`, 8 workers over 1 worker, the worse of idle and busy.
Target <= 1.2: readings are refreshed single-flight, once per interval for the whole fleet.
Expect ~1.0: a host keeps its prober while that one lives (a lease renewed with each
reading, feedback/signals/cache.py), which probes it every interval on the dot, however many
workers there are. Hence the line that also shows probes per interval with 8 workers, which
single-flight keeps at or below 1.00.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from _common import Procs, bench_env, enqueue_noops, median, mysql_conn, tail, unwind_on_signals
from fleet import load_sandbox
from redis import Redis

QUEUE = "heavy"
FLEETS = (1, 8)
READING_KEY = "easeoff:reading:db1"  # feedback.cache.READING_KEY for the config's one host
RETRIES = 2  # shared server: a window with more statements than refreshes is measured again
STATUS_READ = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_show_status', 'Connections')"


@dataclass
class Tally:
    seconds: float = 0.0
    statements: float = 0.0  # SHOW STATUS on the server, own reads removed
    connections: float = 0.0
    refreshes: int = 0  # distinct readings written to Redis
    jobs: int = 0
    periods: list[float] = field(default_factory=list)  # seconds between successive refreshes


def server_counts(conn: pymysql.connections.Connection) -> tuple[int, int]:
    with conn.cursor() as cur:
        cur.execute(STATUS_READ)
        values = {str(name).lower(): int(value) for name, value in cur.fetchall()}
    return values["com_show_status"], values["connections"]


def reading_taken_at(redis: Redis) -> float | None:
    raw = redis.get(READING_KEY)
    return float(json.loads(raw)["taken_at"]) if raw else None


def finished(redis: Redis) -> int:
    return int(redis.zcard(f"rq:finished:{QUEUE}"))


def next_refresh(redis: Redis, seen: float | None, timeout: float) -> float | None:
    """Poll (every 10 ms) until the reading's `taken_at` differs from `seen`; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        taken = reading_taken_at(redis)
        if taken is not None and taken != seen:
            return taken
        time.sleep(0.01)
    return None


def window(conn: pymysql.connections.Connection, redis: Redis, seconds: float, aligned: bool = True) -> dict[str, Any]:
    """Counts over one window: server-side SHOW STATUS and connections, Redis-side refreshes.

    Aligned (a fleet is running): the window opens just after a refresh shows up in Redis and
    closes just after the first refresh seen once `seconds` have passed. A probe writes Redis
    only after its SHOW STATUS ran, so the window holds whole probe periods and the server's
    count is not quantized by where the edges fall (a fixed window of ~9 probes is off by up
    to one either way, ±11%). Not aligned (nothing of ours running): a fixed window.
    """
    seen = reading_taken_at(redis)
    if aligned:
        seen = next_refresh(redis, seen, timeout=10.0)
        if seen is None:
            raise SystemExit("probe_fanin: no refresh in 10 s: are the workers probing?")
    jobs0 = finished(redis)
    show0, conn0 = server_counts(conn)
    began = time.monotonic()
    refreshes, periods = 0, []
    while True:
        left = seconds - (time.monotonic() - began)
        if not aligned and left <= 0:
            break
        taken = next_refresh(redis, seen, timeout=max(left, 0.0) + 10.0 if aligned else left)
        if taken is None:
            if aligned:
                raise SystemExit("probe_fanin: the fleet stopped probing in the middle of a window")
            continue
        refreshes += 1
        if seen is not None:
            periods.append(taken - seen)
        seen = taken
        if aligned and time.monotonic() - began >= seconds:
            break
    show1, conn1 = server_counts(conn)
    elapsed = time.monotonic() - began
    return {
        "seconds": elapsed,
        "statements": show1 - show0 - 1,  # of our two reads, the closing one falls inside the window
        "connections": conn1 - conn0,
        "refreshes": refreshes,
        "jobs": finished(redis) - jobs0,
        "periods": periods,
    }


def top_up(redis: Redis, mode: str, seconds: float) -> None:
    """Busy mode: enough no-op jobs to outlast the window and the next transition."""
    if mode == "busy":
        short = int((seconds + 5) * 100) - int(redis.llen(f"rq:queue:{QUEUE}"))
        if short > 0:
            enqueue_noops(redis, short)


@contextlib.contextmanager
def probe_server(shared: bool) -> Iterator[tuple[int, str]]:
    """(port, description) of the MariaDB the fleet probes: by default a private mariadbd
    (scripts/sandbox.py), so that every SHOW STATUS it counts is ours; else the shared one."""
    sandbox = None
    if not shared:
        tmp = Path(tempfile.mkdtemp(prefix="easeoff-bench-mariadb-"))
        try:
            module = load_sandbox()
            sandbox = module.Sandbox(tmp / "sandbox", base_port=module.free_base_port(3700))
            sandbox.up(shards=[1], replicas=0, shape="primary")  # stops what it started if it fails
        except Exception as exc:  # any failure: fall back, and say so
            print(f"no private mariadbd ({exc.__class__.__name__}: {exc}); probing the shared one on 3306")
            shutil.rmtree(tmp, ignore_errors=True)
            sandbox = None
    if sandbox is None:
        yield 3306, "the shared MariaDB on 127.0.0.1:3306 (windows with other clients' SHOW STATUS measured again)"
        return
    try:
        yield sandbox.base_port, f"a private mariadbd on 127.0.0.1:{sandbox.base_port} (every statement ours)"
    finally:
        sandbox.down()
        shutil.rmtree(sandbox.base_dir.parent, ignore_errors=True)


class Fleet:
    """Gated workers (not burst) on QUEUE, grown and shrunk in place."""

    def __init__(self, procs: Procs, config: Path, redis: Redis) -> None:
        self.procs, self.config, self.redis = procs, config, redis
        self.live: list[subprocess.Popen[bytes]] = []

    def resize(self, size: int, settle: float) -> float:
        """Returns the seconds the change took. Shrinking keeps the newest worker: each process
        draws its own probe slack, so each 1-worker window gets a fresh draw."""
        began = time.monotonic()
        self.live.reverse()
        leaving = [self.live.pop() for _ in range(max(len(self.live) - size, 0))]
        for proc in leaving:
            proc.terminate()  # warm shutdown: the worker finishes its job (a no-op) and leaves
        for proc in leaving:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        while len(self.live) < size:
            self.live.append(self.procs.gated(self.config, [QUEUE], burst=False, preload=False))
        deadline = time.monotonic() + 30
        while self.redis.scard("rq:workers") != size or self.redis.get(READING_KEY) is None:
            dead = [p for p in self.live if p.poll() is not None]
            if dead:
                raise SystemExit(f"probe_fanin: a worker exited {dead[0].returncode}: {tail(dead[0])}")
            if time.monotonic() > deadline:
                raise SystemExit(f"probe_fanin: {self.redis.scard('rq:workers')} of {size} workers registered")
            time.sleep(0.05)
        time.sleep(settle)  # past start-up and shutdown: a steady fleet
        return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=8.0, help="least seconds per window (default 8)")
    parser.add_argument("--pairs", type=int, default=2, help="1-worker/8-worker window pairs per mode (default 2)")
    parser.add_argument("--no-busy", action="store_true", help="idle-poll windows only")
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds (default 1)")
    parser.add_argument("--shared", action="store_true", help="probe the shared MariaDB on 3306, not a private one")
    opts = parser.parse_args()
    unwind_on_signals()  # before the private mariadbd starts
    began = time.monotonic()
    modes = ("idle",) if opts.no_busy else ("idle", "busy")
    tallies = {(mode, size): Tally() for mode in modes for size in FLEETS}
    background: list[dict[str, Any]] = []

    with (
        probe_server(opts.shared) as (port, where),
        bench_env("probe_fanin", interval=opts.interval, mysql_url=f"mysql://root@127.0.0.1:{port}") as (
            redis,
            config,
            scratch,
        ),
    ):
        shared = port == 3306
        retries = RETRIES if shared else 0  # on a private server every statement is ours
        procs = Procs(scratch)
        conn = mysql_conn(port)
        fleet = Fleet(procs, config, redis)
        try:
            background.append(window(conn, redis, 2.0, aligned=False))  # nobody of ours running
            for mode in modes:
                for i in range(opts.pairs * 2):
                    size = FLEETS[i % 2]
                    top_up(redis, mode, opts.window)
                    took = fleet.resize(size, settle=0.8)
                    for attempt in range(retries + 1):
                        if attempt:
                            top_up(redis, mode, opts.window)
                        got = window(conn, redis, opts.window)
                        excess = got["statements"] - got["refreshes"]
                        label = f"{mode:<4} {size} worker{'s' if size > 1 else ' '}"
                        print(
                            f"{label}: {got['statements']:3.0f} SHOW STATUS, {got['connections']:3.0f} connections, "
                            f"{got['refreshes']:3.0f} refreshes seen in Redis, {got['jobs']:5.0f} jobs "
                            f"in {got['seconds']:.1f}s (resized in {took:.1f}s)",
                            flush=True,
                        )
                        if excess <= 1:
                            break
                        if attempt < retries:
                            print(f"  {excess:.0f} more statements than refreshes: other clients? measuring again")
                        else:
                            print(f"  {excess:.0f} more statements than refreshes seen in Redis: counted")
                    if mode == "busy" and int(redis.llen(f"rq:queue:{QUEUE}")) == 0:
                        print(f"warning: the queue ran dry during a busy window of {size} workers", flush=True)
                    tally = tallies[(mode, size)]
                    tally.seconds += got["seconds"]
                    tally.statements += got["statements"]
                    tally.connections += got["connections"]
                    tally.refreshes += int(got["refreshes"])
                    tally.jobs += int(got["jobs"])
                    tally.periods += got["periods"]
            fleet.resize(0, settle=0.5)
            background.append(window(conn, redis, 2.0, aligned=False))
        finally:
            conn.close()
            procs.stop_all()

    bg_rate = sum(b["statements"] for b in background) / sum(b["seconds"] for b in background)
    print(f"probed: {where}; SHOW STATUS from other clients with no worker of ours running: {bg_rate:.2f}/s")
    if not shared:
        bg_rate = 0.0  # nothing to subtract: a stray read of ours would only inflate both fleets alike
    ratios = []
    for mode in modes:
        rates = {}
        for size in FLEETS:
            t = tallies[(mode, size)]
            rates[size] = max(t.statements / t.seconds - bg_rate, 0.0)
            label = f"{mode:<4} {size} worker{'s' if size > 1 else ' '}"
            print(
                f"{label}: {rates[size]:.2f} probe statements/s on the server, "
                f"{t.refreshes / t.seconds:.2f} refreshes/s in Redis (median period {median(t.periods or [0]):.3f}s), "
                f"{t.connections / t.seconds:.2f} connections/s, {t.jobs / t.seconds:5.1f} jobs/s "
                f"({t.seconds:.0f}s pooled)"
            )
        ratio = rates[8] / rates[1] if rates[1] > 0 else float("inf")
        print(
            f"{mode:<4} ratio 8/1: {ratio:.3f}; probes per {opts.interval:g} s interval: "
            f"{rates[1] * opts.interval:.2f} (1 worker), "
            f"{rates[8] * opts.interval:.2f} (8 workers; at most 1.00 if single-flight holds)"
        )
        ratios.append(ratio)
    print(
        f"probe interval {opts.interval:g}s, one MySQL host, {opts.window:g}s windows, fleets 1→8→1→8 per mode; "
        f"run time {time.monotonic() - began:.0f}s"
    )
    print(f"probe_rate_ratio {max(ratios):.3f}")


if __name__ == "__main__":
    main()
