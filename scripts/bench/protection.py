"""Does easing off protect live traffic? p99 of short live queries, side by side in one run:

(a) idle, (b) while a batch of heavy jobs runs on plain rq workers, (c) while the same batch
runs on easeoff's gated workers (per-shard concurrency limit with slot waits, threads_running
signal, checkpoints between chunks). The batch is the example `rebuild_user_stats` jobs:
resumable backfills of 200 users each, one CPU-heavy self-join per user (chunk), ~10 s a
job. Each phase runs for the same window with the same number of workers; throughput is
chunks committed in the window, counted in MariaDB. Phases are repeated in turn and the
medians reported.

Everything shares one 2-core host here, so rq's own cost per job (a fork, a connection)
lands next to the live queries: with 40-chunk jobs (2 s each) the ratio is ~1.4-1.6, which
is why heavy work is best written as long resumable jobs.

Last line: `protection_p99_ratio X`, p99 in (c) over p99 in (a). Target <= 1.5.

`--shape oneshot --limit 1` runs the same SQL as one-shot jobs instead, the shape most apps write:
`rebuild_users_once` jobs of 10 users each (about half a second), 160 of them, through plain
rq, easeoff's forking worker and `easeoff worker --in-process` (which keeps one MySQL
connection across jobs, tasks/pool.py), same window and live traffic. Beside them,
`one-stream` runs the batch's jobs one after another on one connection in a plain loop, with
no queue at all: the most heavy work a concurrency limit of one allows, so a shortfall against
plain rq tells what the limit costs apart from what the queue does.
Last line: `protection_oneshot_p99_ratio X`, the in-process easeoff's p99 over idle
(`protection_p99_ratio`'s default-mode figure for the forking worker is printed beside it).

`--limit N` gives easeoff's shard a concurrency limit of N rather than 1, and lifts the
threads_running signal (which would hold every job past the first): the other end of the
trade-off, more heavy work at a higher live p99.

With `--shape oneshot` and no `--limit`, easeoff gets a budget instead (issue 24):
`[resources."shard:3".budget] latency = "1.5x"` (`--budget-x`) and no concurrency limit or
threads_running threshold, so its controller finds the level, forking and `--in-process` alike.
Both easeoff phases and one-stream run `--seconds` (120) from the batch's enqueue. Each easeoff
phase starts cold (an empty Redis): its workers first run idle, nothing queued, until the
measuring side reports the idle baseline (three quiet 5 s windows; at most LEARN_WAIT s), and
only then is the batch enqueued; the phase says whether the learning spell was left out or, no
baseline having come, counted. Work counts from the enqueue, the controller's ramp included (it
starts at a duty cycle of 0.25); the late half is printed beside, and `--trace` prints the
controller's level every 5 s and its decisions. The summary compares each phase's work with one-stream's
(the most one heavy job at a time does, and says so when one-stream itself is over the budget),
and an easeoff phase's live p99 also with that of its own idle spell (the same minutes: the
machine is shared, and its load drifts between phases).
Last lines: `protection_oneshot_budget_p99_ratio X`, the in-process easeoff's live p99 over
idle (the forking worker's figures are printed above), then
`protection_oneshot_budget_work_ratio X`, its heavy chunks over one-stream's. Target >= 0.95 at
a p99 ratio <= 1.5. `--limit 1` runs the hand-set mode above.

Where easeoff reads the live latency: `--source canary` (the default) times a cheap statement
from the prober, in bursts that fill the 5 s window with the p99's 200 samples. `--source server`
reads MariaDB's query_response_time plugin, which this bench then installs on the shared
MariaDB on 3306 if it is missing, with a range base of 2 and its stats on (idempotent; it says
so, and leaves them so). Note that the server source counts every statement on the server, the heavy jobs' own too:
at one job at a time here the rebuilds alone are about 5% of them (18 of some 370 a second),
so the server's p99 is a heavy statement's own time until the duty cycle falls below a fifth.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
from redis import Redis

REPO = Path(__file__).resolve().parents[2]

import _common  # noqa: E402
from fleet import Fleet, unwind_on_signals, wait_for  # noqa: E402
from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from easeoff.feedback import keys  # noqa: E402
from easeoff.feedback.budget.measure import WARMUP_WINDOWS  # noqa: E402
from easeoff.feedback.config import BudgetConfig  # noqa: E402
from easeoff.tasks.catalog import rebuild_user_stats, rebuild_users_once  # noqa: E402
from easeoff.tasks.demo_schema import create_schema, seed_events  # noqa: E402
from easeoff.tasks.pool import close_all  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/10"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "easeoff_shard3"}
SHARD, USERS, PER_USER = 3, 200, 500
RESOURCE = f"shard:{SHARD}"
WORKERS, JOBS, WINDOW, ROUNDS = 4, 8, 20.0, 5
ONESHOT_USERS = 10  # users per one-shot job: about half a second of the chunks' SQL
LIVE_THREADS, LIVE_QPS_PER_THREAD = 2, 150
BUDGET_SECONDS, BUDGET_ROUNDS = 120.0, 3
TRACE_EVERY = 5.0  # seconds between looks at the controller, with --trace
LEARN_WAIT = 50.0  # seconds the idle workers get to learn a baseline (a host no job wants slows its probes after 60)

HEAD = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis}"
[probe]
interval = 1.0
[backoff]
base = 0.5
cap = 2.0
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:3"]
hosts = ["db1"]
"""
LIMITED = """[resources."shard:3".concurrency]
min = 1
max = {limit}
[signals.threads_running]
high = {running_high}
low = {running_low}
[queues.recount]
"""
BUDGETED = """[resources."shard:3".budget]
latency = "{budget_x:g}x"
latency_source = "{source}"
[queues.recount]
"""

PLAIN_WORKER = _common.PLAIN_WORKER.format(preload="", burst=True, worker_class="Worker")


class LiveTraffic:
    """Short point queries at a steady rate, each one timed: the live site."""

    def __init__(self, max_id: int) -> None:
        self.max_id = max_id
        self.samples: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(LIVE_THREADS)]

    def run(self) -> None:
        conn = pymysql.connect(**MYSQL, autocommit=True)
        rng = random.Random()
        period = 1.0 / LIVE_QPS_PER_THREAD
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    started = time.perf_counter()
                    cur.execute("SELECT payload FROM events WHERE id = %s", (rng.randint(1, self.max_id),))
                    cur.fetchall()
                    took = time.perf_counter() - started
                    with self.lock:
                        self.samples.append((time.monotonic(), took))
                    self.stop.wait(max(0.0, period - took))
        finally:
            conn.close()

    def p99(self, since: float, until: float) -> float:
        with self.lock:
            window = sorted(took for at, took in self.samples if since <= at <= until)
        return window[int(0.99 * (len(window) - 1))] if window else float("nan")


def mysql_value(sql: str) -> int:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def chunks_done() -> int:
    return mysql_value("SELECT COUNT(*) FROM job_runs WHERE task = 'rebuild_user_stats'")


def heavy_queries_running() -> int:
    """Heavy statements still executing, such as those of workers just killed."""
    return mysql_value(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'easeoff_shard3' "
        "AND COMMAND = 'Query' AND INFO LIKE 'REPLACE%'"
    )


def server_latency_on() -> str:
    """query_response_time on the shared MariaDB, for `--source server`: installed if missing, its
    buckets powers of 2 (of 10 by default: too coarse for a 1.5x budget), its stats switched on;
    all idempotent, and left so after the run."""
    conn = pymysql.connect(**{k: v for k, v in MYSQL.items() if k != "database"}, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'QUERY_RESPONSE_TIME'")
            installed = int(cur.fetchone()[0]) > 0
            if not installed:
                cur.execute("INSTALL SONAME 'query_response_time'")
            cur.execute("SET GLOBAL query_response_time_range_base = 2")
            cur.execute("SET GLOBAL query_response_time_flush = 1")  # the new base takes effect on a flush
            cur.execute("SET GLOBAL query_response_time_stats = ON")
    finally:
        conn.close()
    done = "was installed" if installed else "installed now"
    return f"query_response_time on 127.0.0.1:3306 {done}, range base 2, stats switched on (left so)"


def oneshot_batch(reps: int = JOBS) -> list[tuple[int, int]]:
    """The same users' chunks as the resumable batch, ten users a job: (first, last) user of each."""
    return [
        (first, min(first + ONESHOT_USERS - 1, USERS))
        for _ in range(reps)
        for first in range(1, USERS + 1, ONESHOT_USERS)
    ]


def enqueue_batch(redis: Redis, setup: Setup) -> None:
    if setup.shape == "oneshot":
        for first, last in oneshot_batch(setup.reps):
            rebuild_users_once.enqueue(shard=SHARD, first_user=first, last_user=last, connection=redis)
        return
    for _ in range(setup.reps):
        rebuild_user_stats.enqueue(shard=SHARD, first_user=1, last_user=USERS, connection=redis)


class OneStream:
    """The one-shot batch run inline, one job after another on one kept connection: no queue,
    no gate, no process per job."""

    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for first, last in oneshot_batch(self.reps):
            if self.stop.is_set():
                return
            rebuild_users_once(shard=SHARD, first_user=first, last_user=last)

    def end(self) -> None:
        self.stop.set()
        self.thread.join()  # the job under way (if the batch is not done) ends within half a second
        close_all()


@dataclass(frozen=True)
class Setup:
    """One run's settings: the batch's shape, easeoff's config, and how long the heavy phases run."""

    shape: str
    config: Path
    budget: bool  # easeoff runs under a budget: its phases learn a baseline first and run `seconds`
    seconds: float  # the budget mode's phases (easeoff and one-stream), from the batch's enqueue
    reps: int  # the batch repeated this often: enough that no phase runs out of work
    scratch: Path
    trace: bool

    def span(self, mode: str) -> float:
        long = self.budget and mode in ("easeoff", "in-process", "one-stream")
        return self.seconds if long else WINDOW


@dataclass
class Phase:
    p99: float
    done: int
    seconds: float
    late_p99: float = math.nan  # over the phase's second half: after the controller's ramp
    late_done: int = 0
    idle_p99: float = math.nan  # over the workers' idle spell before the batch: the same minutes' idle
    note: str = ""
    trace: list[str] = field(default_factory=list)  # the controller's decisions, with --trace


def learn_baseline(redis: Redis) -> tuple[float | None, float]:
    """Wait, with the workers up and nothing queued, for the idle baseline the controller is given:
    the measuring side reports it once it has learned from WARMUP_WINDOWS quiet windows
    (feedback/lua/budget_observe.lua). (The baseline, seconds waited.)"""
    warmup_ms = WARMUP_WINDOWS * BudgetConfig().window * 1000
    began = time.monotonic()
    while time.monotonic() - began < LEARN_WAIT:
        raw, learned_ms = redis.hmget(keys.budget_key(RESOURCE), ["baseline", "learned_ms"])
        if raw and float(learned_ms or 0) >= warmup_ms:
            return float(raw), time.monotonic() - began
        time.sleep(0.5)
    return None, time.monotonic() - began


def controller_now(redis: Redis) -> str:
    limit, duty = redis.mget(keys.limit_key(RESOURCE), keys.duty_key(RESOURCE))
    base = redis.hget(keys.budget_key(RESOURCE), "baseline")
    pace = f"duty {float(duty):.3g}" if duty else "full pace"
    learned = f"baseline {float(base) * 1000:.2f} ms" if base else "no baseline"
    return f"limit {limit.decode() if limit else '-'}, {pace}, {learned}"


def decisions(log_dir: Path) -> list[str]:
    """The budget controller's news, as the stepping workers logged it."""
    lines: list[str] = []
    for log in log_dir.glob("worker-*.log"):
        lines += [line for line in log.read_text(errors="replace").splitlines() if " INFO budget " in line]
    return sorted(lines)


def run_phase(mode: str, live: LiveTraffic, redis: Redis, setup: Setup, rnd: int) -> Phase:
    """p99 of live queries and heavy chunks committed, over one phase."""
    redis.flushdb()  # a budget starts cold each phase: no state, no baseline
    gated = mode in ("easeoff", "in-process")
    log_dir = setup.scratch / f"{mode}-{rnd}"
    log_dir.mkdir()
    fleet = Fleet(log_dir if gated else None)
    inline = OneStream(setup.reps) if mode == "one-stream" else None
    learning = setup.budget and gated
    if mode != "idle" and not learning:
        enqueue_batch(redis, setup)
    seconds = setup.span(mode)
    note = ""
    idle_p99 = math.nan
    before = chunks_done()
    try:
        if mode == "plain":
            fleet.start([sys.executable, "-c", PLAIN_WORKER, REDIS_URL, "recount"], WORKERS)
        elif mode == "easeoff":
            fleet.start_gated(setup.config, ["recount"], WORKERS)
        elif mode == "in-process":
            cli = [sys.executable, "-m", "easeoff.workers.cli", "--config", str(setup.config)]
            fleet.start([*cli, "worker", "recount", "--in-process"], WORKERS)
        elif inline is not None:
            inline.thread.start()
        if learning:
            quiet = time.monotonic()
            baseline, waited = learn_baseline(redis)
            idle_p99 = live.p99(quiet + 1.0, time.monotonic())
            note = f"live p99 {idle_p99 * 1000:.2f} ms while idle; "
            if baseline is not None:
                note += f"baseline {baseline * 1000:.2f} ms learned idle in {waited:.0f}s before the batch: not counted"
            else:
                note += f"no baseline after {waited:.0f}s idle: the cold start's idle spell is counted"
            before = chunks_done()
            started = time.monotonic()  # the phase counts from the enqueue: its first job starts meanwhile
            enqueue_batch(redis, setup)
        else:
            started = time.monotonic()
        middle: int | None = None
        levels: list[str] = []
        while (now := time.monotonic()) < started + seconds:
            if learning and setup.trace:
                levels.append(f"t={now - started:4.0f}s {controller_now(redis)}, chunks {chunks_done() - before}")
            if middle is None and now >= started + seconds / 2:
                middle = chunks_done()
            wake = [started + seconds] + ([started + seconds / 2] if middle is None else [])
            time.sleep(max(0.0, min([now + TRACE_EVERY, *wake]) - time.monotonic()))
        after = chunks_done()
        if learning:
            note += f"; at the end: {controller_now(redis)}"
    finally:
        fleet.stop()
        if inline is not None:
            inline.end()
        wait_for(lambda: heavy_queries_running() == 0, 60, "killed workers' heavy queries to end")
    trace = levels + decisions(log_dir) if setup.trace and learning else []
    end = started + seconds
    return Phase(
        p99=live.p99(started + 1.0, end),
        done=after - before,
        seconds=seconds,
        late_p99=live.p99(started + seconds / 2, end),
        late_done=after - (middle if middle is not None else after),
        idle_p99=idle_p99,
        note=note,
        trace=trace,
    )


def report_limited(opts: argparse.Namespace, p99: dict[str, float], rate: dict[str, float]) -> None:
    """The hand-set modes' summary: each phase against plain rq."""
    batch = JOBS * USERS
    shape = (
        f"{JOBS * USERS // ONESHOT_USERS} one-shot jobs of {ONESHOT_USERS} users"
        if opts.shape == "oneshot"
        else (f"{JOBS} jobs of {USERS} chunks")
    )
    print(
        f"idle p99 {p99['idle'] * 1000:.2f} ms (baseline); batch: {shape}, {WORKERS} workers; "
        f"easeoff's shard limit {opts.limit}"
    )
    for mode in list(p99)[1:]:
        done = rate[mode] * WINDOW
        share = rate[mode] / rate["plain"] if rate["plain"] else float("nan")
        print(
            f"{mode:<10} p99 over idle {p99[mode] / p99['idle']:.2f}x; heavy throughput "
            f"{rate[mode]:.1f} chunks/s ({done:.0f} of {batch} in {WINDOW:.0f}s, {share:.0%} of plain rq's)"
        )
    if opts.shape == "oneshot":
        print(f"forking easeoff worker: p99 over idle {p99['easeoff'] / p99['idle']:.2f}")
        print(f"protection_oneshot_p99_ratio {p99['in-process'] / p99['idle']:.2f}")
    else:
        print(f"protection_p99_ratio {p99['easeoff'] / p99['idle']:.2f}")


def report_budget(opts: argparse.Namespace, results: dict[str, list[Phase]]) -> None:
    """The budget mode's summary: each phase against one-stream, the most one job at a time allows."""

    def med(mode: str, what: str) -> float:
        span = {"done": 1.0, "late_done": 0.5}.get(what)  # work as chunks a second: the late half is half
        return statistics.median(getattr(r, what) / (r.seconds * span if span else 1.0) for r in results[mode])

    idle = med("idle", "p99")
    print(
        f"idle p99 {idle * 1000:.2f} ms (baseline); batch: one-shot jobs of {ONESHOT_USERS} users, {WORKERS} workers; "
        f'easeoff: budget latency = "{opts.budget_x:g}x" (latency_source = "{opts.source}"), no limit or threshold; '
        f"easeoff and one-stream {opts.seconds:.0f}s from the batch's enqueue, the others {WINDOW:.0f}s"
    )
    stream, stream_late = med("one-stream", "done"), med("one-stream", "late_done")
    ratios: dict[str, tuple[float, float]] = {}
    for mode in list(results)[1:]:
        rate, p99 = med(mode, "done"), med(mode, "p99")
        work = rate / stream if stream else math.nan
        ratios[mode] = (p99 / idle, work)
        line = f"{mode:<10} p99 over idle {p99 / idle:.2f}x; heavy {rate:.1f} chunks/s, {work:.0%} of one-stream's"
        if mode in ("easeoff", "in-process"):
            line += f"; {p99 / med(mode, 'idle_p99'):.2f}x over its own idle spell"
        if mode in ("easeoff", "in-process", "one-stream"):
            late = med(mode, "late_done")
            line += (
                f" (late half: p99 {med(mode, 'late_p99') / idle:.2f}x, {late:.1f} chunks/s, "
                f"{late / stream_late if stream_late else math.nan:.0%} of one-stream's)"
            )
        print(line)
    if ratios["one-stream"][0] > opts.budget_x:
        print(
            f"one-stream alone is {ratios['one-stream'][0]:.2f}x idle, over the {opts.budget_x:g}x budget: here the "
            "budget lies below one heavy job at a time"
        )
    p99_ratio, work_ratio = ratios["easeoff"]
    print(f"forking easeoff worker with the budget: p99 over idle {p99_ratio:.2f}, work ratio {work_ratio:.2f}")
    p99_ratio, work_ratio = ratios["in-process"]
    print(f"protection_oneshot_budget_p99_ratio {p99_ratio:.2f}")
    print(f"protection_oneshot_budget_work_ratio {work_ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("resumable", "oneshot"), default="resumable")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {ROUNDS} ({BUDGET_ROUNDS} with a budget)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="the shard's concurrency limit for easeoff (default 1; with --shape oneshot the default is a budget "
        "instead); above 1 the threads_running signal is lifted, or it would hold every second job",
    )
    parser.add_argument("--budget-x", type=float, default=1.5, help="the budget's latency, times the idle p99 (1.5)")
    parser.add_argument("--source", choices=("canary", "server"), default="canary", help="the budget's latency_source")
    parser.add_argument("--seconds", type=float, default=BUDGET_SECONDS, help="the budget mode's long phases")
    parser.add_argument("--trace", action="store_true", help="print the budget controller's decisions per phase")
    opts = parser.parse_args()
    if opts.limit is not None and opts.limit < 1:
        parser.error(f"--limit must be 1 or more, not {opts.limit}")
    budget = opts.shape == "oneshot" and opts.limit is None
    opts.limit = opts.limit or 1
    rounds = opts.rounds or (BUDGET_ROUNDS if budget else ROUNDS)
    unwind_on_signals()
    redis = Redis.from_url(REDIS_URL)
    create_schema(SHARD, reset=True)
    events = seed_events(SHARD, users=USERS, per_user=PER_USER)
    if budget and opts.source == "server":
        print(server_latency_on())
    live = LiveTraffic(max_id=events)
    modes: tuple[str, ...] = ("idle", "plain", "easeoff")
    if opts.shape == "oneshot":
        modes += ("in-process", "one-stream")
    results: dict[str, list[Phase]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="easeoff-bench-protection-") as tmp:
        config = Path(tmp) / "protection.toml"
        if budget:
            tail = BUDGETED.format(budget_x=opts.budget_x, source=opts.source)
        else:
            running = (2, 1) if opts.limit == 1 else (1000, 900)
            tail = LIMITED.format(limit=opts.limit, running_high=running[0], running_low=running[1])
        config.write_text(HEAD.format(redis=REDIS_URL) + tail, encoding="utf-8")
        reps = 3 * max(1, math.ceil(opts.seconds / WINDOW)) if budget else JOBS  # 1.5x one-stream's 10 jobs/s
        setup = Setup(opts.shape, config, budget, opts.seconds, reps, Path(tmp), opts.trace)
        for thread in live.threads:
            thread.start()
        try:
            for rnd in range(rounds):
                for mode in results:
                    phase = run_phase(mode, live, redis, setup, rnd)
                    results[mode].append(phase)
                    print(
                        f"  {mode:<10} p99 {phase.p99 * 1000:7.2f} ms   heavy chunks done {phase.done} "
                        f"in {phase.seconds:.0f}s" + (f"   ({phase.note})" if phase.note else ""),
                        flush=True,
                    )
                    for line in phase.trace:
                        print(f"      {line}")
        finally:
            live.stop.set()
            with contextlib.suppress(Exception):
                redis.flushdb()
                Queue("recount", connection=redis, serializer=JSONSerializer).empty()
    if budget:
        report_budget(opts, results)
        return
    p99 = {mode: statistics.median(r.p99 for r in runs) for mode, runs in results.items()}
    rate = {mode: statistics.median(r.done / r.seconds for r in runs) for mode, runs in results.items()}
    report_limited(opts, p99, rate)


if __name__ == "__main__":
    main()
