"""The nemesis run, Jepsen-style: thousands of ledger jobs while a seeded schedule of faults hits
Redis, Sentinel, the workers, their clocks and MariaDB; then a checker reads the whole history.

Jobs (tasks/catalog_spans.py, `span_*`): one-shot non-idempotent, idempotent, resumable with
transactional checkpoints, and concurrency- and rate-limited ones that sleep 0.05-3 s. Each writes
its start and its end to the `task_spans` ledger in MariaDB, each in its own transaction, stamped by
MariaDB's clock. Faults (scripts/faults/schedule.py): the Redis primary SIGSTOPped 5-40 s, or
SIGKILLed and restarted from its AOF, or SIGKILLed until Sentinel (down-after-milliseconds 30000,
its default) promotes the replica; worker parents SIGSTOPped 3-20 s (their horse runs on); workers
with their horses, or horses alone, SIGKILLed; extra workers under faketime +-15 s; MariaDB stopped
and started; strain (connections piled over the `connections` threshold) and `easeoff pause
resource:shard:N`, each recorded in the ledger DB when it was published and lifted.

After the schedule and a drain, scripts/faults/checker.py judges the history and the run prints
each violation with its evidence, then `nemesis_lost`, `nemesis_duplicate_runs`,
`nemesis_double_placed`, `nemesis_limit_excess_s`, `nemesis_rate_excess`, `nemesis_ungated_starts`
and, last, `nemesis_violations N`. Exit 0 only when N is 0.

Everything runs on servers of its own, all stopped at the end however the run ends: two AOF
redis-servers and three Sentinels (ports --redis-port, --sentinel-port), a sandboxed MariaDB
(scripts/sandbox.py, from --mysql-port up) and the workers.

    .venv/bin/python scripts/nemesis.py --quick --seed 3              # ~300 jobs, a few of each fault
    .venv/bin/python scripts/nemesis.py --seed 3                      # 5,000 jobs
    .venv/bin/python scripts/nemesis.py --quick --seed 3 --faults redis_stop,pause   # replay a subset
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
from bench.fleet import load_sandbox, unwind_on_signals
from faults import checker, history
from faults.schedule import KINDS, Fault, make_schedule, parse_kinds
from faults.servers import REDIS_ERRORS, RedisFleet, Workers, close_quietly
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from easeoff.feedback import keys
from easeoff.feedback.config import load_config
from easeoff.feedback.connect import connect as connect_redis
from easeoff.feedback.rate import parse_rate
from easeoff.tasks.catalog_spans import SPANS_TABLE_DDL, span_chunks, span_idempotent, span_limited, span_once
from easeoff.tasks.demo_schema import create_schema
from easeoff.tasks.registry import HeavyTask
from easeoff.tasks.shards import SHARD_URLS_ENV, connect

REPO = Path(__file__).resolve().parents[1]
QUEUE = "heavy"
SHARDS = (1, 2, 3)  # one sandboxed primary holds all three; shard:3 has a fixed concurrency limit
SHARD3_LIMIT = 3
PROBE_INTERVAL = 1.0
STRAIN_CONNECTIONS = 60  # over `connections` high (0.5 of the sandbox's max-connections 100)
CHUNK_PAUSE = 0.05
RESULT_TTL = 24 * 3600
LONG_SHARE = 0.2  # of one-shot and idempotent jobs, those that sleep 0.05-3 s rather than up to 0.1 s
WINDOWS_DDL = """CREATE TABLE IF NOT EXISTS nemesis_windows (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    scope VARCHAR(128) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    published DECIMAL(17, 6) NOT NULL,
    lifted DECIMAL(17, 6) NOT NULL
) ENGINE=InnoDB"""
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


class Nemesis:
    def __init__(self, args: argparse.Namespace, kinds: list[str], workdir: Path) -> None:
        self.args, self.kinds, self.workdir = args, kinds, workdir
        self.schedule = make_schedule(args.seed, kinds, args.duration, args.quick)
        self.fleet = RedisFleet(workdir / "redis", args.redis_port, args.sentinel_port)
        sandbox = load_sandbox()
        self.sandbox = sandbox.Sandbox(workdir / "sandbox", base_port=sandbox.free_base_port(args.mysql_port))
        self.stop = threading.Event()
        self.locks = {"redis": threading.Lock(), "mysql": threading.Lock()}
        self.done: Counter[str] = Counter()  # faults that took effect, by kind
        self.missed: Counter[str] = Counter()  # faults that found nothing to hit (no live horse...)
        self.windows: list[checker.Window] = []
        self.unwritten: list[checker.Window] = []
        self.windows_lock = threading.Lock()  # two faults may record at once
        self.held: list[pymysql.connections.Connection] = []
        self.jobs: dict[str, checker.Job] = {}

    # -- set-up ------------------------------------------------------------------------------------

    def set_up(self) -> None:
        busy = self.fleet.ports_in_use()
        if busy:
            raise SystemExit(f"nemesis: ports {busy} are in use (pick others: --redis-port, --sentinel-port)")
        self.fleet.start()
        self.primary = self.sandbox.up(shards=[1], replicas=0, shape="primary").shards[1].writer
        os.environ[SHARD_URLS_ENV] = json.dumps({str(s): self.primary.url for s in SHARDS})
        for shard in SHARDS:
            create_schema(shard, reset=True)
            self.sql(shard, SPANS_TABLE_DDL, "TRUNCATE task_spans")
        self.sql(1, WINDOWS_DDL, "TRUNCATE nemesis_windows")
        self.config = self.workdir / "nemesis.toml"
        self.config.write_text(
            f"""[tasks]
modules = ["easeoff.tasks.catalog", "easeoff.tasks.catalog_spans"]
[redis]
url = "{self.fleet.url(0)}"
replica_acks = {self.args.replica_acks}
replica_ack_timeout = 1.0
[probe]
interval = {PROBE_INTERVAL}
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
[resources."shard:3"]
primary = "p1"
concurrency = {{ min = {SHARD3_LIMIT}, max = {SHARD3_LIMIT} }}
[signals.connections]
high = 0.5
low = 0.3
[queues.{QUEUE}]
""",
            encoding="utf-8",
        )
        self.settings = load_config(self.config)
        self.redis = connect_redis(self.settings)
        self.workers = Workers(self.config, self.args.workers, self.workdir, dict(os.environ), QUEUE)

    def sql(self, shard: int, *statements: str, args: tuple[Any, ...] = ()) -> None:
        conn = connect(shard)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement, args or None)
            conn.commit()
        finally:
            conn.close()

    def enqueue(self) -> None:
        rng = random.Random(f"{self.args.seed}:jobs")
        for _ in range(self.args.jobs):
            r = rng.random()
            task: HeavyTask
            if r < 0.06:
                task, kwargs = span_limited, {"shard": 3, "seconds": round(rng.uniform(0.05, 3.0), 2)}
            elif r < 0.26:
                kwargs = {"shard": rng.choice((1, 2)), "chunks": rng.randint(3, 6), "pause": CHUNK_PAUSE}
                task = span_chunks
            else:
                task = span_once if r < 0.63 else span_idempotent
                long = rng.random() < LONG_SHARE  # running across a fault, not just between two
                seconds = rng.uniform(0.05, 3.0) if long else rng.uniform(0.0, 0.1)
                kwargs = {"shard": rng.choice(SHARDS), "seconds": round(seconds, 3)}
            job = task.enqueue(connection=self.redis, **kwargs)
            # The checker reads the registries at the end: a finished job keeps its place for the
            # whole run (rq's default result_ttl, 500 s, is shorter than a full run).
            self.redis.hset(job.key, "result_ttl", RESULT_TTL)
            resources = tuple(job.meta["easeoff"]["resources"])
            self.jobs[job.id] = checker.Job(
                job.id, task.name, task.idempotent, task.resumable, (*resources, f"task:{task.name}")
            )

    # -- the faults --------------------------------------------------------------------------------

    def run_schedule(self) -> None:
        threads = []
        start = time.monotonic()
        for number, fault in enumerate(self.schedule, 1):
            if self.stop.wait(max(0.0, start + fault.at - time.monotonic())):
                break
            thread = threading.Thread(target=self.inject, args=(number, fault), name=f"fault-{number}", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()

    def inject(self, number: int, fault: Fault) -> None:
        lock = self.locks.get(fault.family, contextlib.nullcontext())
        with lock:
            began = time.monotonic()
            try:
                detail = getattr(self, f"fault_{fault.kind}")(fault, random.Random(fault.pick))
            except Exception as exc:  # a fault that cannot be injected is reported, not fatal
                detail = None
                say(f"fault #{number} {fault.kind}: could not inject: {exc!r}")
            if detail is None:
                self.missed[fault.kind] += 1
            else:
                self.done[fault.kind] += 1
                say(f"fault #{number} {fault.kind} over after {time.monotonic() - began:.1f}s: {detail}")

    def hold(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def fault_redis_stop(self, fault: Fault, rng: random.Random) -> str:
        node = self.fleet.primary()
        say(f"SIGSTOP Redis primary {node.name} for {fault.seconds:.1f}s")
        node.pause()
        try:
            self.hold(fault.seconds)
        finally:
            node.resume()
        return f"{node.name} stopped {fault.seconds:.1f}s; primary now {self.fleet.primary().name}"

    def fault_redis_kill(self, fault: Fault, rng: random.Random) -> str:
        node = self.fleet.primary()
        say(f"SIGKILL Redis primary {node.name}; AOF restart in {fault.seconds:.1f}s")
        node.kill()
        self.hold(fault.seconds)
        self.fleet.restart(node)
        return f"{node.name} killed and restarted from its AOF"

    def fault_failover(self, fault: Fault, rng: random.Random) -> str:
        old = self.fleet.primary()
        say(f"SIGKILL Redis primary {old.name} until Sentinel promotes its replica (down-after 30 s)")
        killed = time.monotonic()
        old.kill()
        try:
            self.fleet.wait_promoted(away_from=old, timeout=120)
        finally:
            promoted = time.monotonic() - killed
            self.fleet.restart(old)  # back as a replica of the promoted one
        return f"{old.name} killed; {self.fleet.primary().name} promoted after {promoted:.1f}s; {old.name} rejoined"

    def fault_worker_stop(self, fault: Fault, rng: random.Random) -> str | None:
        pid = self.workers.pause_one(rng)
        if pid is None:
            return None
        say(f"SIGSTOP worker {pid} (its parent only) for {fault.seconds:.1f}s")
        try:
            self.hold(fault.seconds)
        finally:
            self.workers.resume(pid)
        return f"worker {pid} stopped {fault.seconds:.1f}s"

    def fault_worker_kill(self, fault: Fault, rng: random.Random) -> str | None:
        pid = self.workers.kill_one(rng)
        return None if pid is None else f"worker {pid} and its horse SIGKILLed"

    def fault_horse_kill(self, fault: Fault, rng: random.Random) -> str | None:
        deadline = time.monotonic() + 10  # short jobs: a horse is alive a fraction of the time
        while (pid := self.workers.kill_horse(rng)) is None and time.monotonic() < deadline:
            self.stop.wait(0.05)
        return None if pid is None else f"work horse {pid} SIGKILLed"

    def fault_skew(self, fault: Fault, rng: random.Random) -> str:
        proc = self.workers.start_one(skew=fault.skew)
        say(f"worker {proc.pid} started under faketime {fault.skew:+.0f}s for {fault.seconds:.0f}s")
        self.hold(fault.seconds)
        self.workers.retire(proc)
        return f"worker {proc.pid} ran {fault.seconds:.0f}s with its clock {fault.skew:+.0f}s off"

    def fault_mysql_restart(self, fault: Fault, rng: random.Random) -> str:
        say(f"stopping MariaDB ({self.primary.name}) for {fault.seconds:.1f}s")
        self.sandbox.kill(self.primary.name, graceful=True)
        self.hold(fault.seconds)
        self.sandbox.start(self.primary.name)
        return f"MariaDB down {fault.seconds:.1f}s"

    def fault_strain(self, fault: Fault, rng: random.Random) -> str:
        """Connections piled over `connections` high on the primary every shard lives on. The strain
        counts as published for a shard when its cool-down key appears (the prober published it)."""
        with ThreadPoolExecutor(max_workers=10) as pool:  # one by one, a loaded machine takes seconds
            for conn in pool.map(lambda _: self.open_connection(), range(STRAIN_CONNECTIONS)):
                if conn is not None:
                    self.held.append(conn)
        scopes = [f"shard:{s}" for s in SHARDS]
        published: dict[str, float] = {}
        until = time.monotonic() + fault.seconds
        while time.monotonic() < until and not self.stop.is_set():
            for scope in scopes:
                if scope not in published:
                    with contextlib.suppress(*REDIS_ERRORS):
                        if self.redis.exists(keys.cooldown_key(scope)):
                            published[scope] = time.time()
            self.stop.wait(0.1)
        lifted = time.time()
        piled = len(self.held)
        for conn in self.held:
            close_quietly(conn)
        self.held.clear()
        for scope, at in published.items():
            self.record(checker.Window(scope, "strain", at, lifted))
        return f"{piled} connections held {fault.seconds:.1f}s; published on {sorted(published) or 'none'}"

    def open_connection(self) -> pymysql.connections.Connection | None:
        try:
            return pymysql.connect(host="127.0.0.1", port=self.primary.port, user="root", connect_timeout=2)
        except pymysql.MySQLError:
            return None  # MariaDB may be restarting: strain what we can

    def fault_pause(self, fault: Fault, rng: random.Random) -> str:
        scope = f"resource:shard:{fault.shard}"
        until = time.monotonic() + fault.seconds
        published = None
        while published is None and time.monotonic() < until and not self.stop.is_set():
            if self.cli("pause", scope, "--reason", "nemesis"):
                published = time.time()
            else:
                self.stop.wait(1.0)
        self.hold(max(0.0, until - time.monotonic()))
        lifted = time.time()
        deadline = time.monotonic() + 120
        while not self.cli("resume", scope, "--reason", "nemesis") and time.monotonic() < deadline:
            self.stop.wait(1.0)
        if published is None:
            return f"{scope}: the pause never got through"
        self.record(checker.Window(f"shard:{fault.shard}", "pause", published, lifted))
        return f"{scope} paused {lifted - published:.1f}s"

    def cli(self, *args: str) -> bool:
        command = [sys.executable, "-m", "easeoff.workers.cli", "--config", str(self.config), *args]
        try:
            result = subprocess.run(command, cwd=REPO, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def record(self, window: checker.Window) -> None:
        """A strain or pause window, in the ledger DB now if it answers, else at the end."""
        with self.windows_lock:
            self.windows.append(window)
            self.unwritten.append(window)
        self.flush_windows()

    def flush_windows(self) -> None:
        with self.windows_lock:
            self._flush_windows()

    def _flush_windows(self) -> None:
        while self.unwritten:
            w = self.unwritten[0]
            try:
                self.sql(
                    1,
                    "INSERT INTO nemesis_windows (scope, kind, published, lifted) VALUES (%s, %s, %s, %s)",
                    args=(w.scope, w.kind, w.published, w.lifted),
                )
            except pymysql.MySQLError:
                return
            self.unwritten.pop(0)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> int:
        print(f"nemesis seed {self.args.seed}, faults {','.join(self.kinds)}, {len(self.schedule)} scheduled:")
        for number, fault in enumerate(self.schedule, 1):
            print(f"  #{number:<3} {fault.describe()}")
        print(f"replay: {' '.join(self.replay_args())}", flush=True)
        self.set_up()
        self.enqueue()
        tasks = Counter(j.task for j in self.jobs.values())
        say(f"enqueued {len(self.jobs)} jobs ({dict(tasks)}); {self.args.workers} workers")
        self.workers.keep_up()
        nemesis = threading.Thread(target=self.run_schedule, name="nemesis", daemon=True)
        nemesis.start()
        while nemesis.is_alive():
            nemesis.join(timeout=1.0)
            self.keep_workers()
        say(f"schedule over; draining for up to {self.args.drain:.0f}s")
        deadline = time.monotonic() + self.args.drain
        settled_since: float | None = None
        while time.monotonic() < deadline:
            self.keep_workers()
            try:
                left = self.unsettled()
            except REDIS_ERRORS:
                left = -1
            if left == 0:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since > 3.0:
                    break
            else:
                settled_since = None
            time.sleep(1.0)
        say(f"drained: {self.unsettled()} jobs still waiting; stopping the workers")
        self.workers.stop()
        self.flush_windows()
        return self.check()

    def keep_workers(self) -> None:
        try:
            self.workers.keep_up()
        except OSError as exc:
            say(f"could not start a worker: {exc}")

    def unsettled(self) -> int:
        r = self.redis
        return int(
            r.llen(f"rq:queue:{QUEUE}")
            + r.zcard(ScheduledJobRegistry(QUEUE, connection=r).key)
            + r.zcard(StartedJobRegistry(QUEUE, connection=r).key)
            + r.zcard(DeferredJobRegistry(QUEUE, connection=r).key)
        )

    def replay_args(self) -> list[str]:
        args = ["scripts/nemesis.py", "--seed", str(self.args.seed), "--jobs", str(self.args.jobs)]
        args += ["--duration", f"{self.args.duration:g}", "--workers", str(self.args.workers)]
        return args + (["--quick"] if self.args.quick else []) + ["--faults", ",".join(self.kinds)]

    # -- the history and its check --------------------------------------------------------------------

    def read_history(self) -> checker.History:
        places = history.places(self.redis, QUEUE)
        failed = [j for j in self.jobs if "failed" in places.get(j, frozenset())]
        reasons = {j: history.failure_text(self.redis, j) for j in failed}
        chunks = history.chunk_applications(SHARDS, task="span_chunks")
        conn = connect(1)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT scope, kind, published, lifted FROM nemesis_windows")
                windows = [checker.Window(s, k, float(p), float(lf)) for s, k, p, lf in cur.fetchall()]
        finally:
            conn.close()
        limits = {"shard:3": SHARD3_LIMIT}
        rates = {}
        for task in (span_once, span_idempotent, span_limited, span_chunks):
            if task.concurrency:
                limits[f"task:{task.name}"] = task.concurrency
            if task.rate:
                rate = parse_rate(task.rate)
                rates[f"task:{task.name}"] = (rate.count, rate.per)
        return checker.History(
            jobs=self.jobs,
            events=history.span_events(SHARDS),
            places=places,
            failure_reasons=reasons,
            chunk_rows={k: v for k, v in chunks.items() if k[0] in self.jobs},
            limits=limits,
            rates=rates,
            windows=windows,
            probe_interval=PROBE_INTERVAL,
        )

    def check(self) -> int:
        hist = self.read_history()
        report = checker.check(hist)
        places = Counter(p for where in hist.places.values() for p in where)
        reasons = Counter(history.reason_kind(t) for t in hist.failure_reasons.values())
        starts = Counter(e.kind for e in hist.events)
        print()
        print("== NEMESIS SUMMARY ==")
        print(f"jobs {len(self.jobs)}; at the end: {dict(places)}; ledger: {dict(starts)}")
        print(f"failed, by reason: {dict(reasons) or 'none'}")
        print(f"still pending after the drain: {len(report.pending)} {report.pending[:10]}")
        print(f"strain/pause windows published: {len(hist.windows)}")
        planned = Counter(f.kind for f in self.schedule)
        print(
            "faults (injected/scheduled): "
            + ", ".join(f"{k} {self.done[k]}/{planned[k]}" for k in KINDS if planned[k])
            + f"; workers exited by themselves: {self.workers.crashed}"
        )
        for log in self.workers.crash_logs:
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            print(f"  {log.name} ended: {lines[-1][:300] if lines else '(empty)'}")
        for v in report.violations:
            print(f"VIOLATION {v.metric} {v.job_id}: {v.evidence}")
        print(f"replay: {' '.join(self.replay_args())}")
        print(f"nemesis took {time.monotonic() - T0:.0f}s")
        if report.pending:
            print(f"NOT SETTLED: {len(report.pending)} jobs still pending after a {self.args.drain:g}s drain")
        for line in report.lines():
            print(line)
        return 1 if report.total or report.pending else 0

    def tear_down(self) -> None:
        self.stop.set()
        for conn in self.held:
            close_quietly(conn)
        if hasattr(self, "workers"):
            self.workers.stop()
        self.fleet.stop()
        self.sandbox.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs to enqueue (5000; 300 with --quick)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=None, help="seconds of faults (480; 75 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a short run: fewer jobs, shorter stalls")
    parser.add_argument("--faults", default="all", help=f"comma-separated kinds, or all: {', '.join(KINDS)}")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--drain", type=float, default=None, help="seconds to let jobs settle after the faults")
    parser.add_argument("--replica-acks", type=int, default=1, choices=(0, 1))
    parser.add_argument("--redis-port", type=int, default=6420, help="the two redis-servers: this and the next")
    parser.add_argument("--sentinel-port", type=int, default=26420, help="the three Sentinels: from this one")
    parser.add_argument("--mysql-port", type=int, default=4600, help="the sandboxed MariaDB: first free block from")
    args = parser.parse_args()
    try:
        kinds = parse_kinds(args.faults)
    except ValueError as exc:
        print(f"nemesis: --faults: {exc}", file=sys.stderr)
        return 2
    args.jobs = args.jobs if args.jobs is not None else (300 if args.quick else 5000)
    args.duration = args.duration if args.duration is not None else (75.0 if args.quick else 480.0)
    args.drain = args.drain if args.drain is not None else (120.0 if args.quick else 300.0)
    if args.jobs < 1 or args.duration <= 0 or args.workers < 1:
        print("nemesis: --jobs, --duration and --workers must be positive", file=sys.stderr)
        return 2
    for tool in ("redis-server", "mariadbd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"nemesis: {tool} is not installed (run scripts/services.sh)", file=sys.stderr)
            return 2
    unwind_on_signals()  # SIGTERM and SIGHUP unwind like Ctrl-C: every `finally` runs
    workdir = Path(tempfile.mkdtemp(prefix="easeoff-nemesis-"))
    nemesis = Nemesis(args, kinds, workdir)
    code = 1
    try:
        code = nemesis.run()
    finally:
        nemesis.tear_down()
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
