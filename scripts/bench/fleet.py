"""What the demo, the chaos run and the benchmarks share: worker fleets as real processes, and real strain.

No path tricks: a benchmark beside it imports it as `fleet`, and scripts/demo.py and
scripts/chaos.py, which Python runs with scripts/ first on the path, as `bench.fleet`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pymysql

REPO = Path(__file__).resolve().parents[2]
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module (scripts/ holds command-line scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"easeoff_{name}", REPO / "scripts" / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"scripts/{name}.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def load_sandbox() -> ModuleType:
    """scripts/sandbox.py: extra real mariadbd instances on other ports."""
    return load_script("sandbox")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def unwind_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` (workers, servers, the DB) runs:
    a benchmark stopped by `timeout` must leave no worker polling Redis behind it."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)


def sandbox_shard_config(topology, redis_url: str, interval: float) -> str:  # type: ignore[no-untyped-def]
    """A config's head for shard 1 on a sandbox (scripts/sandbox.py): its pair and replica as
    hosts, the example tasks, the Redis and the probe interval. Callers add signals and queues."""
    hosts = "".join(f'[mysql.hosts.{n}]\nurl = "{i.url}"\n' for n, i in topology.instances.items())
    return f"""
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis_url}"
[probe]
interval = {interval}
{hosts}
[resources."shard:1"]
pair = ["s1a", "s1b"]
replicas = ["s1r1"]
"""


def mysql_value(sql: str) -> float:
    """The last column of the first row of `sql` on the local MariaDB."""
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return float(cur.fetchone()[-1])
    finally:
        conn.close()


def connection_thresholds(above_high: int = 30, above_low: int = 15) -> tuple[float, float, int]:
    """`connections` high/low just above today's baseline, so holding ~40 connections is strain."""
    maximum = mysql_value("SELECT @@GLOBAL.max_connections")
    baseline = int(mysql_value("SHOW GLOBAL STATUS LIKE 'Threads_connected'"))
    return round((baseline + above_high) / maximum, 4), round((baseline + above_low) / maximum, 4), baseline


class HeldConnections:
    """Real idle connections to MariaDB: strain that can be dialled up and down."""

    def __init__(self) -> None:
        self.held: list[pymysql.connections.Connection] = []

    def hold(self, n: int) -> float:
        while len(self.held) < n:
            self.held.append(pymysql.connect(**MYSQL))
        while len(self.held) > n:
            self.held.pop().close()
        return time.time()


def children(pid: int) -> list[int]:
    """Child processes of `pid` (a worker's work horse), found by parent pid in Linux's /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


class Fleet:
    """Worker processes, each in its own session so the whole process group can be stopped."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], count: int = 1, env: dict[str, str] | None = None) -> None:
        for _ in range(count):
            if self.log_dir is not None:
                out = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child's
            else:
                out = subprocess.DEVNULL
            self.procs.append(
                subprocess.Popen(
                    list(args), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            if out is not subprocess.DEVNULL:
                out.close()

    def start_gated(self, config: Path, queues: Sequence[str], count: int = 1, env: dict[str, str] | None = None):
        self.start(
            [sys.executable, "-m", "easeoff.workers.cli", "--config", str(config), "worker", *queues], count, env
        )

    def stop(self, graceful: bool = False, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown) and wait, or SIGKILL at once: the whole group and each
        worker's work horse, which rq starts in a session of its own."""
        for proc in self.procs:
            if proc.poll() is None:
                horses = [] if graceful else children(proc.pid)
                os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
                for horse in horses:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(horse, signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
