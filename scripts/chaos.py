"""Chaos: thousands of ledger jobs while workers are SIGKILLed, Redis and MariaDB restart and
strain comes and goes. At the end every job is finished (with its ledger rows) or failed with a
reason, none is lost and no resumable job applied a chunk twice. Last lines:
`chaos_duplicate_chunks N`, then `chaos_lost N`.

Everything runs on servers of its own, so the machine's Redis and MariaDB are left alone: a
redis-server with AOF (appendfsync always) in a temporary directory, and a sandboxed MariaDB
primary (scripts/sandbox.py) holding both shards' ledgers. A fifth of the jobs are resumable
`ledger_in_chunks` (a few chunks with a short pause, each one `job_runs` row committed with the
job's transactional checkpoint: a chunk applied twice would show as its tag twice); of the rest,
half are `record_run` (one `job_runs` row per execution: a rerun would show as a duplicate),
half `record_once` (idempotent: one `job_ledger` row per job, `runs` counts executions). Kills
take a worker and its work horse together, as a lost machine would, so jobs really are
abandoned mid-run (and resumable ones mid-chunk-sequence).

    .venv/bin/python scripts/chaos.py                     # 5,000 jobs
    .venv/bin/python scripts/chaos.py --jobs 300 --quick  # the tests' short run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pymysql
from bench.fleet import load_sandbox
from faults.history import chunk_applications, failure_text, ledger_runs, reason_kind
from faults.servers import REDIS_ERRORS, RedisServer, Workers
from faults.servers import close_quietly as _close
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from easeoff.feedback.signals.traffic import count_request
from easeoff.feedback.tally.counters import read_counts
from easeoff.tasks.catalog import ledger_in_chunks, record_once, record_run
from easeoff.tasks.demo_schema import create_schema
from easeoff.tasks.shards import SHARD_URLS_ENV

QUEUE = "heavy"
SHARDS = (1, 2)
LEDGER_EVERY = 5  # every fifth job is a resumable ledger_in_chunks
LEDGER_PAUSE = 0.05  # seconds after each chunk: long enough for kills to land mid-job


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


T0 = time.monotonic()


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.redis_server = RedisServer(workdir)
        sandbox = load_sandbox()
        self.sandbox = sandbox.Sandbox(workdir / "sandbox", base_port=sandbox.free_base_port(3800))
        self.events: Counter[str] = Counter()
        self.stop_chaos = threading.Event()

    def set_up(self) -> None:
        self.redis_server.start()
        self.primary = self.sandbox.up(shards=[1], replicas=0, shape="primary").shards[1].writer
        os.environ[SHARD_URLS_ENV] = json.dumps({str(s): self.primary.url for s in SHARDS})
        for shard in SHARDS:
            create_schema(shard, reset=True)
        self.config = self.workdir / "chaos.toml"
        self.config.write_text(
            f"""[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{self.redis_server.url}"
[probe]
interval = 0.5
timeout = 0.5
[backoff]
base = 0.5
cap = 2.0
[mysql.hosts.p1]
url = "{self.primary.url}"
[resources."shard:1"]
primary = "p1"
[resources."shard:2"]
primary = "p1"
[signals.connections]
high = 0.5
low = 0.3
[signals.web]
source = "app"
high = 50
low = 20
[queues.{QUEUE}]
""",
            encoding="utf-8",
        )
        self.redis = Redis.from_url(self.redis_server.url, socket_timeout=5, retry_on_timeout=True)
        self.workers = Workers(self.config, self.args.workers, self.workdir, dict(os.environ), QUEUE)

    def enqueue(self) -> list[str]:
        """The jobs, in order; `self.kinds` says which task each runs, `self.chunks` how many
        chunks each ledger_in_chunks job has."""
        ids = []
        self.kinds: dict[str, str] = {}
        self.chunks: dict[str, int] = {}
        for i in range(self.args.jobs):
            shard = SHARDS[i % 2]
            if i % LEDGER_EVERY == LEDGER_EVERY - 1:
                chunks = 3 + (i // LEDGER_EVERY) % 4
                job = ledger_in_chunks.enqueue(shard=shard, chunks=chunks, pause=LEDGER_PAUSE, connection=self.redis)
                self.chunks[job.id] = chunks
            else:
                task = record_once if i % 2 else record_run
                job = task.enqueue(shard=shard, tag="chaos", connection=self.redis)
            self.kinds[job.id] = job.meta["easeoff"]["task"]
            ids.append(job.id)
        return ids

    # -- the disturbances ------------------------------------------------------------------

    def disturb(self) -> None:
        """Kill a worker every few seconds; restart Redis once and MariaDB once; strain up and down."""
        quick = self.args.quick
        kill_every = (0.5, 1.5) if quick else (1.0, 4.0)
        redis_at, mysql_at = (3.0, 6.0) if quick else (12.0, 30.0)
        strain_every = 4.0 if quick else 8.0
        start = time.monotonic()
        next_kill = start + self.rng.uniform(*kill_every)
        next_strain = start + strain_every
        redis_done = mysql_done = False
        held: list[pymysql.connections.Connection] = []
        traffic_until = 0.0
        while not self.stop_chaos.is_set():
            now = time.monotonic()
            if now >= next_kill:
                self.workers.kill_one(self.rng)
                next_kill = now + self.rng.uniform(*kill_every)
            if not redis_done and now - start >= redis_at:
                redis_done = True
                self.restart_redis()
            if not mysql_done and now - start >= mysql_at:
                mysql_done = True
                self.restart_mysql(held)
            if now >= next_strain:
                next_strain = now + strain_every
                if self.events["strain"] % 2 == 0:
                    held += self.connections(60)  # over `high` (0.5 of max_connections 151 is ~76)
                    traffic_until = now + strain_every / 2
                else:
                    for conn in held:
                        _close(conn)
                    held.clear()
                self.events["strain"] += 1
            if now < traffic_until:
                self.traffic()
            try:
                self.workers.keep_up()
            except OSError as exc:
                say(f"could not start a worker: {exc}")
            self.stop_chaos.wait(0.1)
        for conn in held:
            _close(conn)

    def connections(self, n: int) -> list[pymysql.connections.Connection]:
        opened = []
        try:
            for _ in range(n):
                opened.append(pymysql.connect(host="127.0.0.1", port=self.primary.port, user="root", connect_timeout=2))
        except pymysql.MySQLError:
            pass  # MariaDB may be restarting: strain what we can
        return opened

    def traffic(self) -> None:
        with contextlib.suppress(REDIS_ERRORS):
            count_request(self.redis, "web", 20)

    def restart_redis(self) -> None:
        say("restarting Redis (AOF, appendfsync always)")
        self.redis_server.stop()
        time.sleep(1.0)  # the fleet sees Redis gone for a moment
        self.redis_server.start()
        self.events["redis_restarts"] += 1
        say("Redis is back")

    def restart_mysql(self, held: list[pymysql.connections.Connection]) -> None:
        say(f"restarting MariaDB ({self.primary.name}, holding both shards' ledgers)")
        for conn in held:
            _close(conn)
        held.clear()
        self.sandbox.kill(self.primary.name, graceful=True)
        time.sleep(1.0)
        self.sandbox.start(self.primary.name)
        self.events["mysql_restarts"] += 1
        say("MariaDB is back")

    # -- the run and the reckoning -----------------------------------------------------------------

    def run(self) -> int:
        self.set_up()
        job_ids = self.enqueue()
        ledger = len(self.chunks)
        say(
            f"enqueued {len(job_ids)} jobs ({ledger} resumable ledger_in_chunks, the rest half record_run, "
            f"half idempotent record_once); {self.args.workers} workers"
        )
        self.workers.keep_up()
        chaos = threading.Thread(target=self.disturb, name="chaos", daemon=True)
        chaos.start()
        deadline = time.monotonic() + self.args.timeout
        settled_since: float | None = None
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                left = self.unsettled()
            except REDIS_ERRORS:
                continue
            if time.monotonic() - T0 > 5:
                say(f"unsettled {left}, workers killed {self.workers.kills}")
            chaos_over = self.events["redis_restarts"] and self.events["mysql_restarts"]
            if left == 0 and chaos_over:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since > 2.0:
                    break
            else:
                settled_since = None
        self.stop_chaos.set()
        chaos.join(timeout=30)
        self.workers.stop()
        return self.reckon(job_ids)

    def unsettled(self) -> int:
        """Jobs still ready, deferred or running."""
        queue = Queue(QUEUE, connection=self.redis)
        return (
            queue.count
            + self.redis.zcard(ScheduledJobRegistry(QUEUE, connection=self.redis).key)
            + self.redis.zcard(StartedJobRegistry(QUEUE, connection=self.redis).key)
        )

    def reckon(self, job_ids: list[str]) -> int:
        finished = set(FinishedJobRegistry(QUEUE, connection=self.redis).get_job_ids(cleanup=False))
        failed = set(FailedJobRegistry(QUEUE, connection=self.redis).get_job_ids(cleanup=False))
        waiting = set(Queue(QUEUE, connection=self.redis).get_job_ids())
        waiting |= set(ScheduledJobRegistry(QUEUE, connection=self.redis).get_job_ids(cleanup=False))
        waiting |= set(StartedJobRegistry(QUEUE, connection=self.redis).get_job_ids(cleanup=False))
        runs = ledger_runs(SHARDS)  # job id → executions written to a ledger
        once = {j for j in job_ids if self.kinds[j] == "record_once"}
        plain = [j for j in job_ids if self.kinds[j] == "record_run"]
        applied = chunk_applications(SHARDS)  # (job id, chunk tag) → times applied
        duplicate_chunks = sum(1 for n in applied.values() if n > 1)
        chunks_missing = [
            j
            for j, n in self.chunks.items()
            if j in finished and any(applied.get((j, f"chunk:{k}"), 0) == 0 for k in range(1, n + 1))
        ]
        lost, no_row, both, reasonless = [], [], [], []
        for job_id in job_ids:
            places = (job_id in finished) + (job_id in failed) + (job_id in waiting)
            if places == 0:
                lost.append(job_id)
            elif places > 1:
                both.append(job_id)
            if job_id in finished and runs.get(job_id, 0) == 0:
                no_row.append(job_id)
        failed_reasons: Counter[str] = Counter()
        for job_id in failed & set(job_ids):
            text = failure_text(self.redis, job_id)
            if not text:
                reasonless.append(job_id)
            failed_reasons[reason_kind(text)] += 1
        duplicates = sum(1 for j in plain if runs.get(j, 0) > 1)
        failed_after_work = sum(1 for j in failed & set(plain) if runs.get(j, 0) > 0)
        deferrals = Counter()
        for c in read_counts(self.redis)["deferred"]:
            deferrals[c.reason] += c.value
        reruns_absorbed = sum(1 for j in once if runs.get(j, 0) > 1)
        abandoned = {(c.task, c.reason): c.value for c in read_counts(self.redis)["abandoned"]}

        print()
        print("== CHAOS SUMMARY ==")
        print(
            f"jobs {len(job_ids)}: finished {len(finished & set(job_ids))}, failed {len(failed & set(job_ids))}, "
            f"still waiting {len(waiting & set(job_ids))}, lost {len(lost)}, in two places {len(both)}"
        )
        print(
            f"disturbances: {self.workers.kills} workers SIGKILLed (with their work horses), "
            f"{self.events['redis_restarts']} Redis restart, {self.events['mysql_restarts']} MariaDB restart, "
            f"{self.events['strain']} strain flips (connections and app traffic); "
            f"{self.workers.crashed} workers exited by themselves"
        )
        print(f"deferrals by reason: {dict(deferrals) or 'none'}")
        print(f"abandoned jobs recovered: {abandoned or 'none'}")
        print(f"failed, by reason: {dict(failed_reasons) or 'none'}")
        print(
            f"duplicates: {duplicates} record_run jobs ran twice (a worker died mid-job after its row was written); "
            f"{reruns_absorbed} idempotent record_once jobs ran again and still left one row"
        )
        print(
            f"finished without a ledger row: {len(no_row)}; failed without a reason: {len(reasonless)}; "
            f"failed as abandoned after their row was written: {failed_after_work}"
        )
        resumed = sum(c.value for c in read_counts(self.redis)["abandoned"] if c.task == "ledger_in_chunks")
        print(
            f"resumable ledger_in_chunks jobs {len(self.chunks)} ({sum(applied.values())} chunk rows; "
            f"{resumed} abandoned mid-job, requeued and resumed from what MySQL committed): "
            f"{duplicate_chunks} chunks applied twice, {len(chunks_missing)} finished with a chunk missing"
        )
        problems = len(lost) + len(both) + len(no_row) + len(reasonless) + len(waiting & set(job_ids))
        problems += duplicate_chunks + len(chunks_missing)
        if problems:
            twice = [key for key, n in applied.items() if n > 1]
            print(
                f"PROBLEMS: lost {lost[:5]}, two places {both[:5]}, no row {no_row[:5]}, no reason {reasonless[:5]}, "
                f"chunks twice {twice[:5]}, chunks missing {chunks_missing[:5]}"
            )
        print(f"chaos took {time.monotonic() - T0:.0f}s")
        print(f"chaos_duplicate_chunks {duplicate_chunks}")
        print(f"chaos_lost {len(lost) + len(waiting & set(job_ids))}")
        return 1 if problems else 0

    def tear_down(self) -> None:
        self.stop_chaos.set()
        if hasattr(self, "workers"):
            self.workers.stop()
        self.redis_server.stop()
        self.sandbox.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--quick", action="store_true", help="disturb sooner and more often (the tests' short run)")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("chaos: redis-server is not installed (run scripts/services.sh)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="easeoff-chaos-"))
    chaos = Chaos(args, workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    code = 1
    try:
        code = chaos.run()
    finally:
        chaos.tear_down()
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
