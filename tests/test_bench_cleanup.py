"""A benchmark stopped by `timeout` (SIGTERM to the script alone) leaves none of its fleet behind:
a worker left polling Redis would skew every figure measured after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from redis import Redis

from tests.conftest import REPO, wait_until


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, through /proc (workers run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_benchmark_sent_sigterm_leaves_no_worker_running(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "bench" / "churn.py")],
        cwd=REPO,
        stdout=(tmp_path / "churn.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # churn.py starts eight workers, then lets them settle: stop it there, as `timeout` would,
        # once every worker has registered with rq (on the benchmark's own Redis DB) and polls.
        churn_redis = Redis.from_url("redis://127.0.0.1:6379/11")
        wait_until(lambda: churn_redis.scard("rq:workers") >= 8, 60, what="churn.py's eight workers to register")
        fleet = descendants(bench.pid)
        assert len(fleet) >= 8, fleet
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) != 0
        survivors = sorted(pid for pid in fleet | descendants(bench.pid) if alive(pid))
        assert survivors == [], f"still running after the benchmark ended: {survivors}"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=10)
