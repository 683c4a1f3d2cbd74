"""A fleet on several hosts, as honestly as one machine allows: three "hosts", each a directory
with its own copy of the config and its own workers in process groups of their own, started and
stopped independently of each other. Every job runs exactly once, and each MySQL host is probed
about once per interval by the fleet as a whole, whichever hosts are up at the time."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from pathlib import Path

import pymysql
from redis import Redis

from easeoff.tasks.catalog import record_run
from tests.conftest import MYSQL, WorkerProcesses, wait_until

INTERVAL = 0.5


def ledger(tag: str) -> tuple[int, int]:
    """(rows, distinct jobs) in both shards' run ledgers for `tag`."""
    rows = jobs = 0
    for shard in (1, 2):
        conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM job_runs WHERE tag = %s", (tag,))
                n, distinct = cur.fetchone()
                rows, jobs = rows + int(n), jobs + int(distinct)
        finally:
            conn.close()
    return rows, jobs


def test_hosts_join_and_leave_without_losing_a_job_or_doubling_probes(
    tmp_path: Path, write_config, redis_conn: Redis, shards
) -> None:
    source = write_config(interval=INTERVAL, stale_after=5.0)
    hosts: dict[str, tuple[Path, WorkerProcesses]] = {}
    for name in ("host-a", "host-b", "host-c"):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(source, home / "easeoff.toml")  # each host its own copy, as deployed
        hosts[name] = (home / "easeoff.toml", WorkerProcesses(home))

    probes: list[float] = []  # db1's reading times, as stored
    watching = threading.Event()

    def watch_db1() -> None:
        while not watching.wait(0.01):
            raw = redis_conn.get("easeoff:reading:db1")
            if raw is not None:
                taken = float(json.loads(raw)["taken_at"])
                if not probes or taken != probes[-1]:
                    probes.append(taken)

    watcher = threading.Thread(target=watch_db1, daemon=True)
    try:
        for name in ("host-a", "host-b"):
            config, procs = hosts[name]
            for _ in range(2):
                procs.start(config, "heavy")
        ids = [
            record_run.enqueue(shard=1 + i % 2, tag="hosts", seconds=0.05, connection=redis_conn).id for i in range(80)
        ]
        watcher.start()
        wait_until(lambda: ledger("hosts")[1] >= 20, 60, what="host-a and host-b to run jobs")

        hosts["host-a"][1].stop_all()  # a host leaves (warm shutdown: running jobs end first)
        config, procs = hosts["host-c"]
        for _ in range(2):
            procs.start(config, "heavy")  # and another joins
        wait_until(lambda: ledger("hosts")[1] >= 60, 60, what="host-b and host-c to run jobs")
        hosts["host-b"][1].stop_all()  # the last of the first hosts leaves: host-c probes now
        wait_until(lambda: ledger("hosts")[1] == len(ids), 90, what="every job to run on host-c")
        seen = len(probes)
        wait_until(lambda: len(probes) >= seen + 3, 10 * INTERVAL, what="host-c, alone now, to go on probing")
    finally:
        watching.set()
        for _, procs in hosts.values():
            procs.stop_all()

    assert ledger("hosts") == (len(ids), len(ids))  # each job ran once: none lost, none run twice
    span = probes[-1] - probes[0]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    print(f"{len(probes)} readings of db1 in {span:.1f}s; gaps {min(gaps):.2f}..{max(gaps):.2f}s")
    assert span > 4 * INTERVAL, probes
    # One prober at a time, fleet-wide: about one reading per interval, never a burst of them...
    assert len(probes) <= span / INTERVAL + 3, f"{len(probes)} readings in {span:.1f}s"
    assert min(gaps) >= 0.5 * INTERVAL, gaps
    # ...and the hand-overs as hosts left kept readings well inside stale_after.
    assert max(gaps) < 5.0, gaps
