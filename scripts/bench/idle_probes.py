"""How many probe statements does an idle fleet send? 8 gated workers over 20 MySQL host entries,
idle queues, with probing that follows demand off (today: every host every interval) and on,
side by side in one run.

The 20 entries are 20 names for one private sandbox mariadbd (scripts/sandbox.py, started
here and stopped at the end): probes key on the host's name, so each entry is a target of its
own, probed on its own; and on a server nobody else uses, its counters count our probes alone
(the shared MariaDB on 3306 serves other fleets and tests). Each entry is a resource of its
own; no job is queued, so no job wants any of them.

Per mode, over a window after start-up and (for "on") after the dormancy period: statements
per second on the server (`Questions`), less those of a baseline window with no workers, and
probes per second (`Com_show_status`: one per probe). The run uses a short
`probe.dormant_after` (DORMANT_AFTER, not the default minute) so that it ends in a couple of
minutes; the dormant interval is the default, 5 s, and the probe interval Vitess's 0.25 s.

Last line: `idle_probe_reduction X`, statements per second off / on. Target >= 10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pymysql
from _common import Procs, bench_env, mysql_conn, tail, unwind_on_signals
from fleet import load_sandbox
from redis import Redis

HOSTS, WORKERS, QUEUE = 20, 8, "heavy"
INTERVAL, DORMANT_INTERVAL, DORMANT_AFTER = 0.25, 5.0, 5.0
READING = "easeoff:reading:{host}"
SIGNALS = """
[signals.connections]
high = 0.99
low = 0.98
[signals.threads_running]
high = 100000
low = 90000
[queues.heavy]
"""


def write_config(path: Path, redis_url: str, port: int, dormant_interval: float) -> None:
    lines = ["[tasks]", 'modules = ["easeoff.tasks.catalog"]', "[redis]", f'url = "{redis_url}"']
    lines += ["[probe]", f"interval = {INTERVAL}", "stale_after = 2.5"]
    lines += [f'dormant_after = "{DORMANT_AFTER:g}s"', f"dormant_interval = {dormant_interval}"]
    for i in range(HOSTS):
        lines += [f"[mysql.hosts.h{i}]", f'url = "mysql://root@127.0.0.1:{port}"']
    for i in range(HOSTS):
        lines += [f'[resources."r{i}"]', f'hosts = ["h{i}"]']
    path.write_text("\n".join(lines) + "\n" + SIGNALS, encoding="utf-8")


def counters(port: int) -> dict[str, int]:
    conn = mysql_conn(port)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_show_status')")
            return {str(name).lower(): int(value) for name, value in cur.fetchall()}
    finally:
        conn.close()


def rates(port: int, seconds: float) -> tuple[float, float]:
    """(statements, probes) per second on the server over `seconds`, our own two reads taken off."""
    before = counters(port)
    began = time.monotonic()
    time.sleep(seconds)
    after = counters(port)
    elapsed = time.monotonic() - began
    # Each `counters` call is one statement, a SHOW STATUS; the first falls inside the window.
    statements = (after["questions"] - before["questions"] - 1) / elapsed
    probes = (after["com_show_status"] - before["com_show_status"] - 1) / elapsed
    return statements, probes


def wait_for_readings(redis: Redis, procs: Procs, timeout: float = 60.0) -> None:
    keys = [READING.format(host=f"h{i}") for i in range(HOSTS)]
    deadline = time.monotonic() + timeout
    while sum(v is not None for v in redis.mget(keys)) < len(keys):
        dead = [p for p in procs.procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"idle_probes: a worker exited {dead[0].returncode}: {tail(dead[0])}")
        if time.monotonic() > deadline:
            raise SystemExit(f"idle_probes: not every entry has a reading after {timeout:g}s")
        time.sleep(0.1)


def dormant_share(redis: Redis) -> float:
    raw = redis.mget([READING.format(host=f"h{i}") for i in range(HOSTS)])
    return sum(1 for r in raw if r is not None and json.loads(r).get("dormant")) / HOSTS


def run_mode(
    redis: Redis, redis_url: str, scratch: Path, port: int, dormant_interval: float, settle: float, window: float
) -> tuple[float, float, float]:
    """(statements/s, probes/s, share of readings dormant at the end) with an idle fleet."""
    redis.flushdb()
    config = scratch / f"idle-{dormant_interval:g}.toml"
    write_config(config, redis_url, port, dormant_interval)
    procs = Procs(scratch)
    try:
        for i in range(WORKERS):
            procs.gated(config, [QUEUE], burst=False, preload=False, tag=f"w{i}")
        wait_for_readings(redis, procs)
        time.sleep(settle)
        statements, probes = rates(port, window)
        return statements, probes, dormant_share(redis)
    finally:
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per mode (default 20)")
    opts = parser.parse_args()
    unwind_on_signals()  # before the sandbox starts
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="easeoff-bench-idle-"))
    sandbox = load_sandbox()
    box = sandbox.Sandbox(tmp / "sandbox", base_port=sandbox.free_base_port(3800))
    try:
        topology = box.up(shards=[1], replicas=0, shape="primary")
        port = next(iter(topology.instances.values())).port
        with bench_env("idle_probes") as (redis, _config, scratch):
            kwargs = redis.connection_pool.connection_kwargs
            redis_url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"
            base_statements, base_probes = rates(port, min(opts.window, 10.0))
            print(f"baseline, no workers: {base_statements:.2f} statements/s, {base_probes:.2f} SHOW STATUS/s")
            # Off: the dormant interval is the interval itself (today's pace everywhere).
            off = run_mode(redis, redis_url, scratch, port, INTERVAL, 2.0, opts.window)
            # On: past the dormancy period, the first slowed round and a dormant interval more.
            on = run_mode(
                redis, redis_url, scratch, port, DORMANT_INTERVAL, DORMANT_AFTER + 2 * DORMANT_INTERVAL, opts.window
            )
            for name, (statements, probes, dormant) in (("off", off), ("on", on)):
                print(
                    f"demand-following {name:<3}: {statements - base_statements:7.2f} probe statements/s "
                    f"({statements:.2f} - baseline), {probes - base_probes:6.2f} probes/s, "
                    f"{probes / HOSTS:.3f} per host per second, readings dormant at the end {dormant:.0%}"
                )
    except pymysql.MySQLError as exc:
        raise SystemExit(f"idle_probes: MySQL: {exc}") from None
    finally:
        box.down()
        shutil.rmtree(tmp, ignore_errors=True)
    reduction = (off[0] - base_statements) / max(on[0] - base_statements, 1e-9)
    print(
        f"{WORKERS} idle gated workers, {HOSTS} host entries on one sandbox server, probe interval {INTERVAL:g}s, "
        f"dormant interval {DORMANT_INTERVAL:g}s after {DORMANT_AFTER:g}s without demand (the bench's short "
        f"dormant_after; the default is 60s), {opts.window:g}s windows; run time {time.monotonic() - began:.0f}s"
    )
    print(f"idle_probe_reduction {reduction:.1f}")


if __name__ == "__main__":
    main()
