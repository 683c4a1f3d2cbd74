"""Helpers shared by the benchmarks in this folder: a dedicated Redis DB, a temporary
config, worker subprocesses (each in its own session, always cleaned up), server-side
MySQL counters and small statistics.

Not a benchmark itself (the leading underscore keeps it out of `scripts/bench/*.py` runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
from fleet import unwind_on_signals
from redis import Redis

REPO = Path(__file__).resolve().parents[2]

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
REDIS_URL = os.environ.get("EASEOFF_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

# A healthy gate: real probes of the local MariaDB, thresholds far above an idle dev box.
CONFIG_TEMPLATE = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis_url}"

[probe]
interval = {interval}
timeout = 0.5
stale_after = 5.0

[backoff]
base = 1.0
cap = 60.0

[mysql.hosts.db1]
url = "{mysql_url}"

[resources."shard:1"]
hosts = ["db1"]

[signals.connections]
high = 0.95
low = 0.90

[signals.threads_running]
high = 1000
low = 900

[signals.qps]
high = 100000000
low = 90000000

[queues.heavy]
"""

# Plain rq's forking Worker, as a user would start it, with the JSON serializer. easeoff's tasks
# refuse to run under a worker that did not ask the gate, so this baseline admits each job itself:
# one assignment per job, the job's own work unchanged. Arguments: REDIS_URL QUEUE...
# `worker_class`: Worker (a work horse forked per job) or SimpleWorker (jobs in its own process).
PLAIN_WORKER = (
    "import sys\n"
    "{preload}"
    "from redis import Redis\n"
    "from rq import {worker_class} as Worker\n"
    "from rq.serializers import JSONSerializer\n"
    "from easeoff.tasks.admission import admit\n"
    "class PlainWorker(Worker):\n"
    "    def perform_job(self, job, *args):\n"
    "        admit(job.id)\n"
    "        return super().perform_job(job, *args)\n"
    "PlainWorker(sys.argv[2:], connection=Redis.from_url(sys.argv[1]), serializer=JSONSerializer).work(burst={burst})\n"
)
# `python -m easeoff.workers.cli ...` exactly, after an optional preload of the task modules.
GATED_WORKER = (
    "import runpy, sys\n{preload}sys.argv[0] = 'easeoff'\n"
    "runpy.run_module('easeoff.workers.cli', run_name='__main__')\n"
)
PRELOAD = "import easeoff.tasks.catalog  # the job's module, imported once in the parent, not per horse\n"


def redis_conn() -> Redis:
    return Redis.from_url(REDIS_URL)


@contextlib.contextmanager
def bench_env(
    name: str, interval: float = 1.0, mysql_url: str = "mysql://root@127.0.0.1:3306"
) -> Iterator[tuple[Redis, Path, Path]]:
    """(redis, config path, scratch dir): DB flushed at start and at end, config in a temp dir.
    The config's one MySQL host, db1 (resource shard:1), is `mysql_url`."""
    unwind_on_signals()
    redis = redis_conn()
    redis.ping()
    wait_for_quiet_db(redis)
    redis.flushdb()
    with tempfile.TemporaryDirectory(prefix=f"easeoff-bench-{name}-") as tmp:
        scratch = Path(tmp)
        config = scratch / f"{name}.toml"
        config.write_text(
            CONFIG_TEMPLATE.format(redis_url=REDIS_URL, interval=interval, mysql_url=mysql_url), encoding="utf-8"
        )
        try:
            yield redis, config, scratch
        finally:
            with contextlib.suppress(Exception):
                redis.flushdb()
            redis.close()


def foreign_clients(redis: Redis) -> int:
    """Other live connections on our DB: someone else's workers or benchmark."""
    me = redis.client_id()
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    return sum(1 for c in redis.client_list() if int(c.get("db", -1)) == db and int(c["id"]) != me)


def wait_for_quiet_db(redis: Redis, patience: float = 120.0) -> None:
    """Both flush the DB: never run on top of another process using it (a concurrent run of a
    benchmark here would corrupt both results)."""
    deadline = time.monotonic() + patience
    while (n := foreign_clients(redis)) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {n} other clients still use {REDIS_URL}; refusing to flush it")
        print(f"bench: {n} other clients use {REDIS_URL}; waiting for them to leave", file=sys.stderr, flush=True)
        time.sleep(5)


class Procs:
    """Worker subprocesses, each in its own session; `stop_all` ends them (and their horses)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def start(self, args: Sequence[str], tag: str) -> subprocess.Popen[bytes]:
        self.count += 1
        log_path = self.log_dir / f"{tag}-{self.count}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(list(args), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def plain(
        self, queues: Sequence[str], burst: bool = True, preload: bool = True, tag: str = "plain", simple: bool = False
    ):
        worker_class = "SimpleWorker" if simple else "Worker"
        code = PLAIN_WORKER.format(preload=PRELOAD if preload else "", burst=burst, worker_class=worker_class)
        return self.start([PYTHON, "-c", code, REDIS_URL, *queues], tag)

    def gated(
        self,
        config: Path,
        queues: Sequence[str],
        burst: bool = True,
        preload: bool = True,
        tag: str = "gated",
        in_process: bool = False,
    ):
        args = ["--config", str(config), "worker", *queues] + (["--burst"] if burst else [])
        args += ["--in-process"] if in_process else []
        if preload:
            return self.start([PYTHON, "-c", GATED_WORKER.format(preload=PRELOAD), *args], tag)
        return self.start([PYTHON, "-m", "easeoff.workers.cli", *args], tag)

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"worker pid {proc.pid} still running after {timeout:g}s; log: {tail(proc)}") from None

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL each worker's whole process group."""
        live = [p for p in self.procs if p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # A horse lives in a process group of its own: nothing else of ours to end here,
        # since burst workers wait for their horse and no-op horses exit at once.
        self.procs = [p for p in self.procs if p.poll() is None]


def tail(proc: subprocess.Popen[bytes], chars: int = 1500) -> str:
    path = getattr(proc, "log_path", None)
    if path is None or not Path(path).exists():
        return "(no log)"
    return Path(path).read_text(errors="replace")[-chars:]


def enqueue_noops(redis: Redis, count: int) -> None:
    from easeoff.tasks.catalog import noop

    for _ in range(count):
        noop.enqueue(shard=1, connection=redis)


def mysql_conn(port: int = 3306) -> pymysql.connections.Connection:
    return pymysql.connect(**{**MYSQL, "port": port}, autocommit=True)


def show_status(conn: pymysql.connections.Connection, name: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        row = cur.fetchone()
        return int(row[1]) if row else 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f}s"
