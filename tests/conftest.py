"""Shared fixtures: real Redis (a dedicated DB), real MariaDB, real worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pymysql
import pytest
from redis import Redis

from easeoff.tasks.demo_schema import create_schema
from tests.offline.sitecustomize import LOG_ENV, refusal

REPO = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("EASEOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The tests' own connections to the local MariaDB, which offers no TLS: without ssl_disabled,
# pymysql's PREFERRED mode loads the CA store for each one (about 50 ms of CPU), and a test that
# piles up 40 connections of strain would spend two seconds doing it.
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "ssl_disabled": True}


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "") -> object:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


def ticks(seconds: float, every: float) -> Iterator[float]:
    """The monotonic time, every `every` seconds for `seconds`: for a test that samples a window."""
    deadline = time.monotonic() + seconds
    while (now := time.monotonic()) < deadline:
        yield now
        time.sleep(every)


def stays_true(predicate: Callable[[], object], seconds: float, interval: float = 0.1, what: str = "") -> None:
    """Check `predicate` over a whole window: a state that must hold, not one to wait for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"no longer true: {what or predicate}"
        time.sleep(interval)
    assert predicate(), f"no longer true: {what or predicate}"


OFFLINE_DIR = Path(__file__).resolve().parent / "offline"


@pytest.fixture(autouse=True)
def unit_tests_connect_to_nothing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str] | None]:
    """A test marked `unit` runs as if Redis and MariaDB were stopped: any socket connect, in
    this process or in a Python process it starts (tests/offline/sitecustomize.py), raises, and
    the test fails at teardown even if the code under test caught the refusal and went on.
    Autouse, so it is in place before any fixture the test asks for (redis_conn fails too).
    Yields the refused addresses (None outside the unit tier): tests/test_tiers.py reads them."""
    if request.node.get_closest_marker("unit") is None:
        yield None
        return
    seen: list[str] = []
    log = tmp_path_factory.mktemp("offline") / "refused.log"
    # Threads an earlier (server) test left running (a probe loop, an HTTP server's client
    # winding down) are not this test's: their connects go through, uncounted.
    leftovers = {t.ident for t in threading.enumerate() if t is not threading.main_thread()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _unless_leftover(socket.socket.connect, leftovers, seen))
        patch.setattr(socket.socket, "connect_ex", _unless_leftover(socket.socket.connect_ex, leftovers, seen))
        patch.setenv(LOG_ENV, str(log))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(OFFLINE_DIR), os.environ.get("PYTHONPATH")])))
        yield seen
    refused = seen + (log.read_text(encoding="utf-8").splitlines() if log.exists() else [])
    assert not refused, "a test marked unit connected (to a server?): " + "; ".join(refused)


def _unless_leftover(original: Any, leftovers: set[int | None], seen: list[str]) -> Any:
    """socket's own connect on a thread an earlier test left running; the refusal on any other."""
    refuse = refusal(None, seen)

    def connect(self: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() in leftovers:
            return original(self, address, *args, **kwargs)
        return refuse(self, address, *args, **kwargs)

    return connect


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    """A worker a failed test left running would take the next tests' jobs from DB 15 and fail
    them too: stop every fleet a test made, whatever became of the test."""
    yield
    while WorkerProcesses.started:
        WorkerProcesses.started.pop().stop_all()


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    conn = Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def shards() -> tuple[int, int]:
    for shard in (1, 2):
        create_schema(shard, reset=True)
    return (1, 2)


def mysql_status(name: str) -> float:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            return float(cur.fetchone()[1])
    finally:
        conn.close()


def max_connections() -> int:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.max_connections")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def scratch_row_table(database: str) -> Iterator[None]:
    """A database of its own on the local MariaDB holding `t` (one row, id 1), dropped afterwards:
    for tests that lock or rewrite a row (`yield from` it in a fixture)."""
    conn = pymysql.connect(**MYSQL, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        cur.execute(f"CREATE OR REPLACE TABLE {database}.t (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB")
        cur.execute(f"INSERT INTO {database}.t VALUES (1, 0)")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.close()


class ConnectionHolder:
    """Real idle connections to the local MariaDB: connection strain a test can dial up and down."""

    def __init__(self) -> None:
        self.held: list[pymysql.connections.Connection] = []

    def hold(self, n: int) -> None:
        while len(self.held) < n:
            self.held.append(pymysql.connect(**MYSQL))
        while len(self.held) > n:
            self.held.pop().close()

    def close(self) -> None:
        self.hold(0)


@pytest.fixture
def connections() -> Iterator[ConnectionHolder]:
    holder = ConnectionHolder()
    yield holder
    holder.close()


CONFIG_TEMPLATE = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis_url}"
{redis_extra}

[probe]
interval = {interval}
timeout = 0.5
stale_after = {stale_after}

[backoff]
base = {backoff_base}
cap = {backoff_cap}
{backoff_extra}

[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"

[mysql.hosts.dead]
url = "mysql://root@127.0.0.1:1"

[resources."shard:1"]
hosts = ["db1"]

[resources."shard:2"]
hosts = {shard2_hosts}

[signals.connections]
high = {high}
low = {low}

[queues.heavy]
[queues.archive]
[queues.recount]

{extra}
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a test config; thresholds default to far above anything a test reaches."""

    def write(**overrides: object) -> Path:
        values: dict[str, object] = {
            "redis_url": TEST_REDIS_URL,
            "redis_extra": "",
            "interval": 0.5,
            "stale_after": 5.0,
            "backoff_base": 0.5,
            "backoff_cap": 1.0,
            "high": 0.95,
            "low": 0.90,
            "shard2_hosts": '["db1"]',
            "extra": "",
            "backoff_extra": "",
        }
        values.update(overrides)
        path = tmp_path / f"easeoff-{len(list(tmp_path.glob('easeoff-*.toml')))}.toml"
        path.write_text(CONFIG_TEMPLATE.format(**values), encoding="utf-8")
        return path

    return write


def children(pid: int) -> list[int]:
    """Child processes of `pid`, read from /proc (the work horse runs in a process group of its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115 - read at once
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


class WorkerProcesses:
    """`easeoff worker` subprocesses, each in its own session so a test can kill it whole."""

    started: ClassVar[list[WorkerProcesses]] = []  # every fleet a test made: none outlives its test

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.orphans: list[int] = []  # work horses of workers killed here, reaped at teardown
        WorkerProcesses.started.append(self)

    def start(
        self,
        config: Path,
        *queues: str,
        burst: bool = False,
        launcher: Sequence[str] = (),
        in_process: bool = False,
    ) -> subprocess.Popen[bytes]:
        """`launcher`: how to run `easeoff` instead of `python -m easeoff.workers.cli` (under faketime, say)."""
        command = list(launcher) or [sys.executable, "-m", "easeoff.workers.cli"]
        args = [*command, "--config", str(config), "worker", *queues]
        if burst:
            args.append("--burst")
        if in_process:
            args.append("--in-process")
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker alone: its work horse, in a process group of its own, runs on —
        until the test ends (`stop_all`), so it cannot finish its job into the next test's Redis."""
        self.orphans += children(proc.pid)
        proc.kill()
        proc.wait(timeout=10)

    def kill_machine(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its work horse as one, as a lost machine would. The worker is
        frozen first: killed horse-first, a live worker would see its horse die and fail the job
        itself (rq's "work-horse terminated unexpectedly") before its own SIGKILL landed."""
        os.kill(proc.pid, signal.SIGSTOP)
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for pid in self.orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("worker-*.log")))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "easeoff.workers.cli", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
