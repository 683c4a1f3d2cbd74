"""Does probing scale with hosts? 8 gated workers and 300 MySQL host entries, at a 1 s and then
a 0.25 s probe interval, side by side in one run.

The 300 entries are spread over real servers: the sandbox's instances (scripts/sandbox.py:
two primaries with a replica each, started here and stopped at the end) and the local
MariaDB on 3306. A few point where no MySQL answers: two at a port that accepts the TCP
connection and then says nothing (a hung host: each probe costs its whole timeout), three at
a closed port (refused at once). Each entry is a resource of its own, so every reading
gates something. The workers idle-poll an empty queue; whoever finds a reading due probes it.

Per interval, over a window of steady state:
- probe time p99: how long one probe took (each reading records it);
- probe period p99: the time between two successive readings of one entry;
- reading age p99: Redis's clock minus the reading's `taken_at`, sampled every 100 ms over every
  entry, over the interval (1.0 = a reading is never older than one interval);
- probe statements per entry per second, counted on the servers (`Com_show_status`: each probe
  runs one SHOW GLOBAL STATUS), against the 1/interval that single-flight allows;
- the probers' CPU: all 8 workers' CPU seconds per second, and the busiest worker's.

Last line: `probe_scale_age_ratio X`, reading age p99 / interval at 300 entries and 0.25 s.
Target <= 1.5.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
from _common import Procs, bench_env, mysql_conn, tail, unwind_on_signals
from fleet import load_sandbox
from redis import Redis

from easeoff.feedback.signals.reading_taker import PROBE_SECONDS
from easeoff.feedback.signals.readings import Reading

ENTRIES, WORKERS, HUNG, REFUSED = 300, 8, 2, 3
QUEUE = "heavy"
READING = "easeoff:reading:{host}"
SIGNALS = """
[signals.connections]
high = 0.99
low = 0.98
[signals.threads_running]
high = 100000
low = 90000
[signals.qps]
high = 100000000
low = 90000000
[queues.heavy]
"""


class HungHost:
    """A TCP port that accepts connections and never sends MySQL's greeting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.held: list[tuple[socket.socket, float]] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = self.sock.accept()
                self.held.append((conn, time.monotonic()))
            cutoff = time.monotonic() - 5.0
            for conn, _ in [h for h in self.held if h[1] < cutoff]:
                conn.close()
            self.held = [h for h in self.held if h[1] >= cutoff]

    def close(self) -> None:
        self.stop.set()
        for conn, _ in self.held:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_ports(server_ports: list[int], hung: int, refused: int) -> list[int]:
    """One port per entry: the unanswering ones first, then the real servers in turn."""
    ports = [hung] * HUNG + [refused] * REFUSED
    return ports + [server_ports[i % len(server_ports)] for i in range(ENTRIES - len(ports))]


def write_config(path: Path, redis_url: str, interval: float, ports: list[int]) -> None:
    lines = ["[tasks]", 'modules = ["easeoff.tasks.catalog"]', "[redis]", f'url = "{redis_url}"']
    lines += ["[probe]", f"interval = {interval}", f"stale_after = {max(5.0, 10 * interval)}"]
    for i, port in enumerate(ports):
        lines += [f"[mysql.hosts.h{i}]", f'url = "mysql://root@127.0.0.1:{port}"']
    for i in range(len(ports)):
        lines += [f'[resources."r{i}"]', f'hosts = ["h{i}"]']
    path.write_text("\n".join(lines) + "\n" + SIGNALS, encoding="utf-8")


def show_status_counts(ports: list[int]) -> dict[int, int]:
    counts = {}
    for port in ports:
        conn = mysql_conn(port)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Com_show_status'")
                counts[port] = int(cur.fetchone()[1])
        finally:
            conn.close()
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def sample(redis: Redis, hosts: list[str], seconds: float) -> dict[str, list[float]]:
    """Every 100 ms: each entry's reading age on Redis's clock; new readings' periods and probe times."""
    keys = [READING.format(host=h) for h in hosts]
    last: dict[str, float] = {}
    ages: list[float] = []
    periods: list[float] = []
    probe_times: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.mget(keys)
            (secs, micros), raw = pipe.execute()
        now = secs + micros / 1e6
        for host, value in zip(hosts, raw, strict=True):
            if value is None:
                ages.append(float("inf"))
                continue
            reading = Reading.from_json(value)
            taken = reading.taken_at
            ages.append(now - taken)
            if host in last and taken != last[host]:
                periods.append(taken - last[host])
                if PROBE_SECONDS in reading.counters:
                    probe_times.append(reading.counters[PROBE_SECONDS])
            last[host] = taken
        time.sleep(0.1)
    return {"ages": ages, "periods": periods, "probe_times": probe_times}


def wait_for_readings(redis: Redis, hosts: list[str], procs: list, timeout: float = 60.0) -> None:
    keys = [READING.format(host=h) for h in hosts]
    deadline = time.monotonic() + timeout
    while sum(v is not None for v in redis.mget(keys)) < len(keys):
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"probe_scale: a worker exited {dead[0].returncode}: {tail(dead[0])}")
        if time.monotonic() > deadline:
            raise SystemExit("probe_scale: not every entry has a reading after 60 s")
        time.sleep(0.1)


@contextlib.contextmanager
def servers() -> Iterator[list[int]]:
    """The ports of real MySQL servers: the sandbox's four instances and the local one."""
    tmp = Path(tempfile.mkdtemp(prefix="easeoff-bench-scale-"))
    module = load_sandbox()
    box = module.Sandbox(tmp / "sandbox", base_port=module.free_base_port(3900, shards=(1, 2)))
    try:
        topology = box.up(shards=[1, 2], replicas=1, shape="primary")
        yield [3306, *(i.port for i in topology.instances.values())]
    finally:
        box.down()
        shutil.rmtree(tmp, ignore_errors=True)


def run_interval(
    redis: Redis,
    scratch: Path,
    redis_url: str,
    interval: float,
    ports: list[int],
    server_ports: list[int],
    window: float,
) -> dict[str, float]:
    redis.flushdb()
    config = scratch / f"scale-{interval:g}.toml"
    write_config(config, redis_url, interval, ports)
    hosts = [f"h{i}" for i in range(len(ports))]
    procs = Procs(scratch)
    workers = [procs.gated(config, [QUEUE], burst=False, preload=False, tag=f"w{i}") for i in range(WORKERS)]
    try:
        wait_for_readings(redis, hosts, workers)
        time.sleep(max(2.0, 4 * interval))  # past start-up: a steady fleet
        cpu0 = {p.pid: cpu_seconds(p.pid) for p in workers}
        show0 = show_status_counts(server_ports)
        began = time.monotonic()
        got = sample(redis, hosts, window)
        elapsed = time.monotonic() - began
        show1 = show_status_counts(server_ports)
        cpu = {p.pid: cpu_seconds(p.pid) - cpu0[p.pid] for p in workers}
    finally:
        procs.stop_all()
    per_server = {p: ports.count(p) for p in server_ports}
    # Our own two reads: the closing one falls inside the window.
    rates = [(show1[p] - show0[p] - 1) / per_server[p] / elapsed for p in server_ports]
    return {
        "probe_p99": percentile(got["probe_times"], 0.99),
        "period_p99": percentile(got["periods"], 0.99),
        "age_p99": percentile(got["ages"], 0.99),
        "age_max": max(got["ages"]),
        "per_entry_rate": sum(rates) / len(rates),
        "per_entry_rate_max": max(rates),
        "cpu_total": sum(cpu.values()) / elapsed,
        "cpu_max": max(cpu.values()) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per interval (default 10)")
    opts = parser.parse_args()
    unwind_on_signals()  # before the sandbox starts
    began = time.monotonic()
    hung = HungHost()
    results: dict[float, dict[str, float]] = {}
    server_count = 0
    try:
        with servers() as server_ports, bench_env("probe_scale") as (redis, _config, scratch):
            redis_url = redis.connection_pool.connection_kwargs
            url = f"redis://{redis_url['host']}:{redis_url['port']}/{redis_url['db']}"
            server_count = len(server_ports)
            ports = host_ports(server_ports, hung.port, closed_port())
            for interval in (1.0, 0.25):
                r = results[interval] = run_interval(redis, scratch, url, interval, ports, server_ports, opts.window)
                print(
                    f"interval {interval:g}s, {ENTRIES} entries, {WORKERS} workers: "
                    f"probe time p99 {1000 * r['probe_p99']:.0f} ms, probe period p99 {r['period_p99']:.3f}s, "
                    f"reading age p99 {r['age_p99']:.3f}s ({r['age_p99'] / interval:.2f} intervals; "
                    f"max {r['age_max']:.3f}s), "
                    f"{r['per_entry_rate']:.2f} probe statements per entry per second (max server "
                    f"{r['per_entry_rate_max']:.2f}; single-flight allows {1 / interval:g}), "
                    f"probers' CPU {r['cpu_total']:.2f} s/s (busiest worker {r['cpu_max']:.2f})",
                    flush=True,
                )
    except pymysql.MySQLError as exc:
        raise SystemExit(f"probe_scale: MySQL: {exc}") from None
    finally:
        hung.close()
    print(
        f"{ENTRIES} host entries over {server_count} servers ({HUNG} hung, {REFUSED} refused), "
        f"{WORKERS} idle gated workers, {opts.window:g}s windows; run time {time.monotonic() - began:.0f}s"
    )
    print(f"probe_scale_age_ratio {results[0.25]['age_p99'] / 0.25:.2f}")


if __name__ == "__main__":
    main()
