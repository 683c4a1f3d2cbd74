"""The whole loop, on real Redis and MariaDB, in under three minutes.

Shard 1 lives on a sandboxed master-master pair with a replica (real mariadbd instances
started by scripts/sandbox.py); shard 2 on the local MariaDB. Heavy jobs run while an
app keeps enqueueing; then, one after the other, connections pile up on shard 2's host
(hysteresis holds it between low and high), shard 1's replica lags, and live traffic
spikes so nothing is dequeued at all and the queue crosses its high-water mark; an
operator pauses a task from the CLI and resumes it. Each time the workers ease off and
resume, and the exporter's page at / graphs it. A summary proves nothing was lost.

Run through `bash scripts/demo.sh` (services and virtualenv first). Exits 1 if a job is
lost or run twice, a check fails or a deadline passes; 130 on Ctrl-C. Workers, exporter,
sandbox and held connections are cleaned up whatever happens.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
from redis import Redis

REPO = Path(__file__).resolve().parents[1]

from bench.fleet import MYSQL, Fleet, connection_thresholds, load_sandbox, mysql_value  # noqa: E402
from rq import Queue  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.registry import (  # noqa: E402
    BaseRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer  # noqa: E402

from easeoff.feedback.config import load_config  # noqa: E402
from easeoff.feedback.levers import events  # noqa: E402
from easeoff.feedback.observe.queue_stats import queue_stats  # noqa: E402
from easeoff.feedback.reasons import Reason  # noqa: E402
from easeoff.feedback.signals.cache import ReadingsCache  # noqa: E402
from easeoff.feedback.signals.traffic import count_request  # noqa: E402
from easeoff.feedback.tally.counters import read_counts  # noqa: E402
from easeoff.feedback.verdict.gate import global_findings, judge  # noqa: E402
from easeoff.tasks.catalog import archive_old_rows, record_run, recount_users  # noqa: E402
from easeoff.tasks.demo_schema import create_schema, seed_events  # noqa: E402
from easeoff.tasks.shards import SHARD_URLS_ENV, connect  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"  # the demo's own Redis DB, flushed at start and end
QUEUES = ["heavy", "archive", "recount"]  # the workers' priority order
RESOURCES = ["shard:1", "shard:2"]
SHARDS = (1, 2)
WORKERS = 3
USERS, PER_USER = 40, 50  # per shard; seed_events makes half of each user's events 90 days old
OLD_ROWS = USERS * PER_USER // 2
FEED_PER_SECOND = 4.0  # the steady stream of record_run jobs (0.2 s of work each)
STRAIN, PARTLY = 40, 22  # extra connections held on shard 2's host: above `high`, then between low and high
ABOVE_HIGH, ABOVE_LOW = 30, 15  # connection thresholds: this many connections above today's baseline
LAG_HIGH, LAG_LOW, REPLICA_DELAY = 2.0, 0.5, 6  # seconds; MASTER_DELAY makes the replica lag for real
TRAFFIC_HIGH, TRAFFIC_LOW, TRAFFIC_RATE = 50, 20, 150  # app requests per second
DEPTH_HIGH, DEPTH_LOW = 25, 3  # the heavy queue's water marks (ready jobs), each held for 2 s
DEADLINE = 170.0  # the whole demo, seconds
LOCK_KEY = "easeoff:demo:running"  # one demo at a time on db 13: a second one would flush the first
T0 = time.monotonic()
EASEOFF = [sys.executable, "-m", "easeoff.workers.cli"]
EXPORTER_CADENCE = ["--evaluate-every", "0.5", "--sample-every", "2"]  # quick water marks, a dense graph


def say(message: str = "") -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {message}" if message else "", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


@dataclass(frozen=True)
class Enqueued:
    task: str
    shard: int


class Strain:
    """Real idle connections to the local MariaDB (shard 2's host), held so the server carries
    `extra` connections over the baseline the thresholds were set from, whatever else comes and
    goes on the server meanwhile (tests and benchmarks share it): re-aimed about once a second."""

    def __init__(self, baseline: int, maximum: int) -> None:
        self.others_at_start = baseline - 1  # the baseline counted the connection that read it
        self.maximum = maximum
        self.held: list[pymysql.connections.Connection] = []
        self.extra: int | None = None
        self.short = False

    def others(self) -> int:
        """Connections on the server that are not ours (the one asking aside)."""
        if self.held:
            with self.held[0].cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                return int(cur.fetchone()[1]) - len(self.held)
        return int(mysql_value("SHOW GLOBAL STATUS LIKE 'Threads_connected'")) - 1

    def hold(self, extra: int) -> int:
        """Aim for `extra` connections over the baseline; returns how many are held."""
        self.extra = extra or None
        if not extra:
            self.resize(0)
            return 0
        self.aim(tolerance=0)
        return self.aim(tolerance=0)

    def aim(self, tolerance: int = 2) -> int:
        if self.extra is None:
            return 0
        others = self.others()
        wanted = self.others_at_start + self.extra - others
        room = self.maximum - others - 10  # never crowd out everyone else
        self.short = wanted > room
        wanted = max(0, min(wanted, room))
        if abs(wanted - len(self.held)) > tolerance:
            self.resize(wanted)
        return len(self.held)

    def resize(self, n: int) -> None:
        while len(self.held) < n:
            self.held.append(pymysql.connect(**MYSQL, connect_timeout=5))
        while len(self.held) > n:
            self.held.pop().close()


class Traffic:
    """The app's request counter, driven hard from a thread: live traffic the workers must yield to."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, per_second: int) -> None:
        def pump() -> None:
            redis = Redis.from_url(REDIS_URL)
            try:
                while self.running.is_set():
                    count_request(redis, "web", max(1, per_second // 10))
                    time.sleep(0.1)
            finally:
                redis.close()

        self.running.set()
        self.thread = threading.Thread(target=pump, name="traffic", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running.clear()
        if self.thread is not None:
            self.thread.join(timeout=5)


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: clean up, summarise what there is, exit 130."""


class CannotGoOn(Exception):
    """A worker died, or another demo took Redis db 13 over: waiting longer would prove nothing."""


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        sandbox = load_sandbox()
        self.sandbox = sandbox.Sandbox(workdir / "sandbox", base_port=sandbox.free_base_port(3700))
        self.shard1 = self.sandbox.up(shards=[1], replicas=1).shards[1]
        try:
            self.set_up(workdir)
        except BaseException:
            self.sandbox.down()
            raise

    def set_up(self, workdir: Path) -> None:
        urls = {"1": self.shard1.writer.url, "2": f"mysql://root@{MYSQL['host']}:{MYSQL['port']}"}
        os.environ[SHARD_URLS_ENV] = json.dumps(urls)  # the example tasks (and the workers) find shards here
        self.config_path = workdir / "easeoff-demo.toml"
        self.high, self.low, self.baseline, self.max_connections = self.write_config()
        self.config = load_config(self.config_path)
        self.redis = Redis.from_url(REDIS_URL)
        self.cache = ReadingsCache(self.redis, self.config)
        self.fleet = Fleet(workdir)
        self.exporter: subprocess.Popen[bytes] | None = None
        self.page_url = ""
        self.strain = Strain(self.baseline, self.max_connections)
        self.traffic = Traffic()
        self.jobs: dict[str, Enqueued] = {}
        self.jobs_lock = threading.Lock()
        self.turn = itertools.count()  # record_run jobs alternate between the shards
        self.problems: list[str] = []
        self.shown_at = 0.0
        self.seeded = False
        self.intact_at = 0.0
        self.lock_token = f"{socket.gethostname()} pid {os.getpid()}"
        self.feeding = threading.Event()
        self.feeder: threading.Thread | None = None

    # -- setting up -----------------------------------------------------------------

    def write_config(self) -> tuple[float, float, int, int]:
        """Connection thresholds relative to the local server's baseline, pt-osc style: ~40 held
        connections cross `high`. The sandbox's hosts carry almost no connections."""
        high, low, baseline = connection_thresholds(ABOVE_HIGH, ABOVE_LOW)
        maximum = int(mysql_value("SELECT @@GLOBAL.max_connections"))
        a, b, replica = (self.shard1.instances[i] for i in range(3))
        self.config_path.write_text(
            f"""# written by scripts/demo.py
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{REDIS_URL}"

[probe]
interval = 1.0

[backoff]
base = 1.0
cap = 4.0

[mysql.hosts.db1]   # the local MariaDB: shard 2
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.{a.name}]   # shard 1: a master-master pair and a replica, in the sandbox
url = "{a.url}"
[mysql.hosts.{b.name}]
url = "{b.url}"
[mysql.hosts.{replica.name}]
url = "{replica.url}"

[resources."shard:1"]
pair = ["{a.name}", "{b.name}"]
replicas = ["{replica.name}"]

[resources."shard:2"]
hosts = ["db1"]

[signals.connections]   # Threads_connected / max_connections
high = {high}           # ({baseline} + {ABOVE_HIGH}) / {maximum}
low = {low}            # ({baseline} + {ABOVE_LOW}) / {maximum}

[signals.lag]           # seconds behind, from the pt-heartbeat row
high = {LAG_HIGH}
low = {LAG_LOW}

[signals.web]           # the app's requests per second; global: it holds every queue
source = "app"
high = {TRAFFIC_HIGH}
low = {TRAFFIC_LOW}

[queues.heavy]
[queues.heavy.watermarks.depth]
high = {DEPTH_HIGH}
low = {DEPTH_LOW}
for = 2
[queues.archive]
[queues.recount]
""",
            encoding="utf-8",
        )
        return high, low, baseline, maximum

    def start_exporter(self) -> None:
        """`easeoff exporter` on 9810 if free (else any port): metrics, water marks and the page."""
        port = 0 if _port_open(9810) else 9810
        log = open(self.workdir / "exporter.log", "wb")  # noqa: SIM115 - the child's
        self.exporter = subprocess.Popen(
            [*EASEOFF, "--config", str(self.config_path), "exporter", "--port", str(port), *EXPORTER_CADENCE],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while not self.page_url:
            found = re.search(r"serving (http://\S+?)/metrics", self.exporter_log())
            if found:
                self.page_url = found.group(1) + "/"
            elif self.exporter.poll() is not None or time.monotonic() > deadline:
                raise CannotGoOn(f"the exporter did not start: {self.exporter_log()[-300:]}")
            time.sleep(0.1)

    def exporter_log(self) -> str:
        return (self.workdir / "exporter.log").read_text(errors="replace")

    def track(self, job: Job, task: str, shard: int) -> None:
        with self.jobs_lock:
            self.jobs[job.id] = Enqueued(task, shard)

    def enqueue_runs(self, n: int, tag: str, redis: Redis | None = None) -> None:
        for _ in range(n):
            with self.jobs_lock:
                shard = SHARDS[next(self.turn) % len(SHARDS)]
            job = record_run.enqueue(shard=shard, tag=tag, seconds=0.2, connection=redis or self.redis)
            self.track(job, "record_run", shard)

    def enqueue_recounts(self) -> int:
        n = 0
        for shard in SHARDS:
            for first in range(1, USERS + 1, 10):
                self.track(
                    recount_users.enqueue(shard, first, first + 9, connection=self.redis), "recount_users", shard
                )
                n += 1
        return n

    def start_feeder(self) -> None:
        """A steady stream of small ledger jobs, as an app would enqueue them."""

        def feed() -> None:
            redis = Redis.from_url(REDIS_URL)
            try:
                while self.feeding.is_set():
                    self.enqueue_runs(1, "stream", redis)
                    time.sleep(1.0 / FEED_PER_SECOND)
            finally:
                redis.close()

        self.feeding.set()
        self.feeder = threading.Thread(target=feed, name="feeder", daemon=True)
        self.feeder.start()

    def stop_feeder(self) -> None:
        self.feeding.clear()
        if self.feeder is not None:
            self.feeder.join(timeout=5)

    def cli(self, *args: str) -> str:
        """An operator at the `easeoff` command line."""
        result = subprocess.run(
            [*EASEOFF, "--config", str(self.config_path), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "EASEOFF_OPERATOR": "demo-ops"},
        )
        if result.returncode != 0:
            raise CannotGoOn(f"easeoff {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    # -- what an operator sees ------------------------------------------------------

    def ids_in(self, registry: type[BaseRegistry]) -> set[str]:
        """Job ids in one kind of rq registry across the queues (read only: no cleanup)."""
        return set().union(*(registry(q, connection=self.redis).get_job_ids(cleanup=False) for q in QUEUES))

    def finished_ids(self) -> set[str]:
        return self.ids_in(FinishedJobRegistry)

    def failed_ids(self) -> set[str]:
        return self.ids_in(FailedJobRegistry)

    def ready_ids(self) -> set[str]:
        return set().union(*(Queue(q, connection=self.redis).get_job_ids() for q in QUEUES))

    def on_shard(self, shard: int, ids: set[str], task: str | None = None) -> int:
        with self.jobs_lock:
            return sum(
                1 for j in ids if j in self.jobs and self.jobs[j].shard == shard and task in (None, self.jobs[j].task)
            )

    def done_on(self, shard: int) -> int:
        return self.on_shard(shard, self.finished_ids())

    def running_on(self, shard: int) -> int:
        return self.on_shard(shard, self.ids_in(StartedJobRegistry))

    def totals(self) -> dict[str, int]:
        stats = queue_stats(self.redis, QUEUES)
        return {
            "ready": sum(s.ready for s in stats),
            "deferred": sum(s.deferred for s in stats),
            "running": sum(s.running for s in stats),
            "failed": sum(s.failed for s in stats),
            "finished": sum(FinishedJobRegistry(q, connection=self.redis).count for q in QUEUES),
            "started": sum(c.value for c in read_counts(self.redis)["started"]),
        }

    def verdicts(self) -> dict[str, list[Reason]]:
        """What holds each resource now, global traffic included (empty: admitted)."""
        snapshot = self.cache.stored()
        now = time.time()
        found = {r: list(judge([r], snapshot, self.config, now).reasons) for r in RESOURCES}
        found["global"] = global_findings(snapshot, self.config, now)[0]
        return found

    def held(self, scope: str, kind: str | None = None) -> bool:
        reasons = self.verdicts()[scope]
        return bool(reasons) and (kind is None or any(r.label == kind for r in reasons))

    def readings(self) -> str:
        snapshot = self.cache.stored()
        parts = []
        for host, name, fmt in (
            ("db1", "connections", "conn {:.3f}"),
            (self.shard1.replicas[0].name, "lag", "lag {:.1f}s"),
        ):
            reading = snapshot.get(host)
            value = reading.values.get(name) if reading is not None and reading.error is None else None
            parts.append(fmt.format(value) if value is not None else fmt.split(" ")[0] + " ?")
        web = snapshot.get("app:web")
        parts.append(f"web {web.values.get('web', 0):.0f}/s" if web is not None and web.error is None else "web ?")
        return " ".join(parts)

    def show(self) -> None:
        stats = queue_stats(self.redis, QUEUES)
        cells = []
        for s in stats:
            done = FinishedJobRegistry(s.name, connection=self.redis).count
            cells.append(f"{s.name} {s.ready:3d}/{s.deferred:3d}/{s.running}/{done:3d}")
        verdicts = self.verdicts()
        shown = [f"everything held: {verdicts['global'][0]}"] if verdicts["global"] else []
        for scope in RESOURCES:
            own = [r for r in verdicts[scope] if r not in verdicts["global"]]  # global reasons shown once
            if own:
                shown.append(f"{scope} held: {own[0]}")
        verdict = "; ".join(shown) if shown else "all admitted"
        say(f"{' '.join(cells)} | {self.readings()} | {verdict}")
        self.shown_at = time.monotonic()

    def watch(
        self, seconds: float, until: Callable[[], bool] | None = None, must: Callable[[], bool] | None = None
    ) -> bool:
        """Show progress about once a second for `seconds`, or until `until` holds (then True).
        `until` and `must` are polled ten times a second, so the moment `until` turns true is
        timed closely; False, at once, if `must` stops holding."""
        deadline = time.monotonic() + min(seconds, max(DEADLINE - elapsed(), 1.0))
        while True:
            self.keep_going()
            self.strain.aim()
            if time.monotonic() - self.shown_at > 0.9:
                self.show()
            next_show = time.monotonic() + 1.0
            while time.monotonic() < min(next_show, deadline):
                if must is not None and not must():
                    self.show()
                    return False
                if until is not None and until():
                    self.show()
                    return True
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                if until is None:
                    return True
                return until()

    def keep_going(self) -> None:
        """Hold the demo's lock a little longer, and stop at once if a worker died."""
        holder = self.redis.set(LOCK_KEY, self.lock_token, px=30_000, get=True)
        if holder is not None and holder.decode() != self.lock_token:
            raise CannotGoOn(f"another demo ({holder.decode()}) took over Redis db 13")
        for i, proc in enumerate(self.fleet.procs):
            if proc.poll() is not None:
                raise CannotGoOn(f"worker {i} exited with code {proc.returncode} (see worker-{i}.log below)")
        if self.exporter is not None and self.exporter.poll() is not None:
            raise CannotGoOn(f"the exporter exited: {self.exporter_log()[-300:]}")
        if self.seeded and time.monotonic() - self.intact_at > 5:
            for shard in SHARDS:
                if events_total(shard) != USERS * PER_USER:
                    raise CannotGoOn(
                        f"easeoff_shard{shard} was reset or changed by something else (the tests or a benchmark "
                        "share the local MariaDB): run the demo again when they are done"
                    )
            self.intact_at = time.monotonic()

    def check(self, ok: bool, problem: str, loud: bool = True) -> bool:
        if not ok:
            self.problems.append(problem)
            if loud:
                say(f"!! {problem}")
        return ok

    def a_deferred_job(self, reason: str) -> str:
        for queue in QUEUES:
            for job_id in ScheduledJobRegistry(queue, connection=self.redis).get_job_ids(cleanup=False):
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
                info = job.meta.get("easeoff", {})
                last = info.get("last_reasons", [])
                if any(r.startswith(reason) for r in last):
                    return f"{job.description}: deferred {info.get('deferrals')}x, last because {'; '.join(last)}"
        return f"(no job deferred for {reason} right now)"

    def watermark_events(self, alarm: str = "", change: str = "") -> list[str]:
        """The exporter's water-mark transitions, oldest first; only `alarm`'s `change` if given."""
        found = [e.text for e in reversed(events.recent(self.redis, 200, ("watermark",)))]
        return [t for t in found if t.startswith(alarm) and change in t]

    # -- the story --------------------------------------------------------------------

    def run(self) -> None:
        names = ", ".join(f"{i.name} {i.role} :{i.port}" for i in self.shard1.instances)
        say(f"sandbox up: shard 1 on a master-master pair and a replica ({names}); shard 2 on the local MariaDB")
        say(
            f"thresholds: connections high {self.high} / low {self.low} (local baseline {self.baseline} "
            f"+{ABOVE_HIGH}/+{ABOVE_LOW} of {self.max_connections}), lag high {LAG_HIGH:g}s / low {LAG_LOW:g}s, "
            f"web traffic high {TRAFFIC_HIGH}/s / low {TRAFFIC_LOW}/s"
        )
        for shard in SHARDS:
            create_schema(shard, reset=True)
            seed_events(shard, users=USERS, per_user=PER_USER)
        self.seeded = True
        say(f"seeded easeoff_shard1 and easeoff_shard2: {USERS * PER_USER} events each, {OLD_ROWS} of them old")
        self.start_exporter()
        say(f"exporter up: {self.page_url} (the page) and {self.page_url}metrics; heavy queue water marks "
            f"high {DEPTH_HIGH} / low {DEPTH_LOW} ready jobs")  # fmt: skip

        for shard in SHARDS:
            self.track(archive_old_rows.enqueue(shard=shard, batch_size=100, connection=self.redis), "archive", shard)
        self.enqueue_runs(10, "initial")
        self.fleet.start_gated(self.config_path, QUEUES, WORKERS)
        self.start_feeder()
        say(f"{WORKERS} gated workers (easeoff worker {' '.join(QUEUES)}); an app enqueues {FEED_PER_SECOND:g} "
            "record_run jobs a second")  # fmt: skip
        say("per queue: ready/deferred/running/finished | readings | verdicts")

        say()
        say("== NORMAL: both shards healthy, work flows ==")
        archives = [j for j, e in self.jobs.items() if e.task == "archive"]
        archived = self.watch(30, until=lambda: set(archives) <= self.finished_ids())
        self.check(archived, "the archive jobs did not finish within 30 s of a healthy start")
        say(f"archiving done; enqueued {self.enqueue_recounts()} recount_users batches (10 users each)")
        self.watch(4)
        self.connections_phase()
        self.lag_phase()
        self.traffic_phase()
        self.switch_phase()

        say()
        self.stop_feeder()
        say(f"== DRAIN: the app stops enqueueing; {len(self.jobs)} jobs enqueued in all ==")
        drained = self.watch(40, until=lambda: sum(self.totals()[k] for k in ("ready", "deferred", "running")) == 0)
        self.check(drained, "the queues did not drain before the deadline")
        self.watch(3)  # the exporter sees the drained queue and its water marks settle

    def connections_phase(self) -> None:
        say()
        say(f"== CONNECTIONS: {STRAIN} idle connections held open on shard 2's host (db1) ==")
        held = self.strain.hold(STRAIN)
        strained_at = time.monotonic()
        self.check(not self.strain.short, f"could hold only {held} connections; MariaDB is too busy for the demo")
        eased = self.watch(12, until=lambda: self.held("shard:2", "connections") and self.running_on(2) == 0)
        if self.check(eased, "the workers did not ease off shard 2 within 12 s"):
            say(f"shard 2 eased off {time.monotonic() - strained_at:.1f}s after: its jobs are deferred")
        done2, done1 = self.done_on(2), self.done_on(1)
        self.check(self.watch(5, must=lambda: self.held("shard:2")), "shard 2 was admitted while strained")
        say("a deferred job: " + self.a_deferred_job("connections"))
        say(f"meanwhile shard 1 ran {self.done_on(1) - done1} jobs; shard 2 none")
        self.check(self.done_on(1) > done1, "shard 1 did no work while only shard 2 was strained")
        say(f"-- partly eased: {PARTLY} connections over the baseline, between low and high: hysteresis holds")
        self.strain.hold(PARTLY)
        in_band = self.watch(5, until=lambda: self.held("shard:2", "connections") and any(r.level == "low"
                             for r in self.verdicts()["shard:2"]), must=lambda: self.held("shard:2"))  # fmt: skip
        self.check(in_band, "the reading never settled between low and high")
        self.check(self.watch(3, must=lambda: self.held("shard:2")), "shard 2 was admitted above `low`")
        self.check(self.done_on(2) == done2, f"{self.done_on(2) - done2} shard-2 jobs finished while held")
        cleared_at = time.monotonic()
        self.strain.hold(0)
        say("-- cleared: every extra connection closed")
        resumed = self.watch(8, until=lambda: self.done_on(2) > done2)
        if self.check(resumed, "shard 2 did not resume within 8 s of the strain clearing"):
            say(f"shard 2 resumed {time.monotonic() - cleared_at:.1f}s after the strain cleared")

    def lag_phase(self) -> None:
        replica = self.shard1.replicas[0].name
        say()
        say(f"== LAG: shard 1's replica {replica} applies changes {REPLICA_DELAY}s late (MASTER_DELAY) ==")
        self.sandbox.delay(replica, REPLICA_DELAY)
        began = time.monotonic()
        eased = self.watch(15, until=lambda: self.held("shard:1", "lag") and self.running_on(1) == 0)
        if self.check(eased, "shard 1 was not held within 15 s of its replica lagging"):
            first = self.verdicts()["shard:1"][0]
            say(f"shard 1 held {time.monotonic() - began:.1f}s after the delay began: {first}")
        done1, done2 = self.done_on(1), self.done_on(2)
        self.check(self.watch(4, must=lambda: self.held("shard:1")), "shard 1 was admitted while lagging")
        say(f"meanwhile shard 2 ran {self.done_on(2) - done2} jobs; shard 1 none")
        self.check(self.done_on(1) == done1, "shard-1 jobs finished while its replica lagged")
        self.sandbox.delay(replica, 0)
        cleared_at = time.monotonic()
        say("-- delay removed: the replica catches up")
        resumed = self.watch(12, until=lambda: self.done_on(1) > done1)
        if self.check(resumed, "shard 1 did not resume within 12 s of its replica catching up"):
            say(f"shard 1 resumed {time.monotonic() - cleared_at:.1f}s after the delay was removed")

    def traffic_phase(self) -> None:
        say()
        say(f"== TRAFFIC: the site gets {TRAFFIC_RATE} requests a second: heavy work must not even be dequeued ==")
        high_alarm = "EaseoffQueueDepthHigh queue=heavy"
        fired_before = len(self.watermark_events(high_alarm, "-> firing"))
        self.traffic.start(TRAFFIC_RATE)
        started = self.watch(8, until=lambda: self.held("global", "web"))
        self.check(started, "live traffic did not hold the fleet within 8 s")
        begun = self.totals()["started"]
        fired = self.watch(
            25,
            until=lambda: len(self.watermark_events(high_alarm, "-> firing")) > fired_before,
            must=lambda: self.held("global"),
        )
        if self.check(fired, "the heavy queue's high-water alarm did not fire while traffic held the fleet"):
            say("exporter: " + self.watermark_events(high_alarm, "-> firing")[-1])
        dequeued = self.totals()["started"] - begun
        self.check(dequeued <= WORKERS, f"workers dequeued {dequeued} jobs under global traffic")
        say(f"while the site was busy the workers dequeued nothing ({dequeued} started): no deferrals needed")
        self.traffic.stop()
        say("-- traffic back to normal")
        cleared = self.watch(15, until=lambda: bool(self.watermark_events(high_alarm, "firing -> inactive")))
        if self.check(cleared, "the high-water alarm did not resolve once the queue drained"):
            say("exporter: " + self.watermark_events(high_alarm, "firing -> inactive")[-1])

    def switch_phase(self) -> None:
        say()
        say("== SWITCH: an operator pauses recount_users from the command line, then resumes it ==")
        say("$ easeoff pause task:recount_users --reason 'recount audit' --ttl 2m")
        say(self.cli("pause", "task:recount_users", "--reason", "recount audit", "--ttl", "2m"))
        time.sleep(1.2)  # let every worker see it (one probe interval)
        n = self.enqueue_recounts()
        recounts = {j for j, e in self.jobs.items() if e.task == "recount_users"}
        parked = self.watch(8, until=lambda: not (recounts & (self.ready_ids() | self.ids_in(StartedJobRegistry)))
                            and bool(recounts & self.ids_in(ScheduledJobRegistry)))  # fmt: skip
        if self.check(parked, "the paused task's jobs were not parked"):
            say(f"{n} new recount batches parked: " + self.a_deferred_job("paused"))
        say("$ easeoff resume task:recount_users --reason 'audit done'")
        say(self.cli("resume", "task:recount_users", "--reason", "audit done"))
        resumed = self.watch(15, until=lambda: recounts <= self.finished_ids())
        self.check(resumed, "the recounts did not run after resume")
        self.cli("annotate", "demo: switch drill over")

    # -- the proof ------------------------------------------------------------------------

    def summary(self) -> None:
        finished, failed = self.finished_ids(), self.failed_ids()
        jobs = dict(self.jobs)
        ours_finished = finished & jobs.keys()
        ours_failed = failed & jobs.keys()
        waiting = jobs.keys() - finished - failed
        fetched = Job.fetch_many(list(jobs), connection=self.redis, serializer=JSONSerializer)
        deferred_jobs = sum(1 for j in fetched if j is not None and j.meta.get("easeoff", {}).get("deferrals", 0))
        deferrals: Counter[str] = Counter()
        for c in read_counts(self.redis)["deferred"]:  # hash easeoff:counters:deferred, `queue|task|kind`
            deferrals[c.reason] += c.value
        by_task = Counter(e.task for e in jobs.values())

        print()
        print("== SUMMARY ==")
        ready = self.ready_ids() & waiting
        deferred = self.ids_in(ScheduledJobRegistry) & waiting
        started = self.ids_in(StartedJobRegistry) & waiting
        lost = waiting - ready - deferred - started
        print(
            f"jobs enqueued {len(jobs)} ({', '.join(f'{t} {n}' for t, n in sorted(by_task.items()))}): "
            f"finished {len(ours_finished)}, failed {len(ours_failed)}, still waiting {len(waiting)} "
            f"(ready {len(ready)}, deferred {len(deferred)}, started {len(started)}), nowhere at all {len(lost)}"
        )
        self.check(not lost, f"{len(lost)} jobs are in no queue or registry: lost", loud=False)
        print(
            f"deferred at least once: {deferred_jobs} jobs; deferrals by reason: "
            + (", ".join(f"{k} {n}" for k, n in sorted(deferrals.items())) or "none")
        )
        if deferred_jobs:
            per_job = sum(deferrals.values()) / deferred_jobs
            print(f"deferrals per deferred job: {per_job:.2f} (parked until their shard cleared: no spinning)")
        self.check(not ours_failed, f"{len(ours_failed)} jobs failed", loud=False)
        self.check(not waiting, f"{len(waiting)} jobs had not finished when the demo stopped", loud=False)
        for line in self.watermark_events():
            print(f"water mark: {line}")
        audit = events.recent(self.redis, 10, events.OPERATOR_KINDS)
        for e in reversed(audit):
            print(f"audit: {e.who}: {e.text}" + (f" ({e.why})" if e.why else ""))

        intact = all(events_total(shard) == USERS * PER_USER for shard in SHARDS)
        if not intact:
            print("the shard databases were reset or changed by something else: their rows prove nothing this time")
            self.check(False, "easeoff_shard1/2 were changed by something else during the demo", loud=False)
        else:
            self.check_databases(jobs, ours_finished)
        self.save_page()
        if self.problems:
            print(f"PROBLEMS ({len(self.problems)}):")
            for problem in self.problems:
                print(f"  - {problem}")
        else:
            print(f"nothing lost: all {len(jobs)} jobs are in the finished registry and in the ledger exactly once")
        print(f"demo took {elapsed():.0f}s")

    def save_page(self) -> None:
        """The exporter's page, kept as a file: the exporter stops with the demo."""
        import urllib.request

        copy = Path(tempfile.gettempdir()) / "easeoff-demo-page.html"
        try:
            with urllib.request.urlopen(self.page_url + "?hours=0.1", timeout=10) as response:
                copy.write_bytes(response.read())
            print(f"the page: {self.page_url} while the demo ran; a copy is at {copy}")
        except OSError as exc:
            self.check(False, f"could not read the page at {self.page_url}: {exc}", loud=False)

    def check_databases(self, jobs: dict[str, Enqueued], finished: set[str]) -> None:
        """What the jobs did, read back from MariaDB: archived rows, recounts, and the job_runs ledger."""
        for shard in SHARDS:
            moved, old_left, counted, total = shard_state(shard)
            print(
                f"shard {shard}: {moved} of {OLD_ROWS} old events archived ({old_left} old left), "
                f"{counted} of {USERS} users recounted ({total} events counted, {USERS * PER_USER} expected)"
            )
            archived = moved == OLD_ROWS and old_left == 0
            recounted = counted == USERS and total == USERS * PER_USER
            self.check(archived, f"shard {shard}: {moved} rows archived, {old_left} old rows left", loud=False)
            self.check(recounted, f"shard {shard}: {counted} users recounted, {total} events counted", loud=False)
        ledger = ledger_rows()
        # Each job's row must be on its own shard, exactly once.
        per_job = Counter({j: ledger[e.shard].get(j, 0) for j, e in jobs.items() if e.task == "record_run"})
        missing = [j for j in finished if j in per_job and per_job[j] == 0]
        twice = [j for j, n in per_job.items() if n > 1]
        strangers = sum(n for shard in SHARDS for j, n in ledger[shard].items() if j not in jobs)
        misplaced = sum(1 for shard in SHARDS for j in ledger[shard] if j in jobs and jobs[j].shard != shard)
        print(
            f"ledger (job_runs): {sum(per_job.values())} rows for {len(per_job)} record_run jobs; "
            f"{len(missing)} finished without a row, {len(twice)} with more than one, {misplaced} on the wrong shard"
        )
        self.check(not missing, f"{len(missing)} finished jobs left no ledger row", loud=False)
        self.check(not twice and not misplaced, f"{len(twice)} jobs ran twice, {misplaced} rows misplaced", loud=False)
        if strangers:
            print(f"note: {strangers} ledger rows are not from this demo (tests or benchmarks shared the database)")

    def cleanup(self) -> None:
        self.stop_feeder()
        self.traffic.stop()
        self.strain.hold(0)
        try:
            self.fleet.stop(graceful=True, timeout=20)
        except (KeyboardInterrupt, Interrupted):
            self.fleet.stop(graceful=False)
        if self.exporter is not None and self.exporter.poll() is None:
            os.killpg(self.exporter.pid, signal.SIGTERM)
            try:
                self.exporter.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.exporter.pid, signal.SIGKILL)
        self.sandbox.down()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _query(shard: int, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def ledger_rows() -> dict[int, Counter[str]]:
    """Per shard, job_runs rows per job id."""
    return {
        shard: Counter(
            {job_id: int(n) for job_id, n in _query(shard, "SELECT job_id, COUNT(*) FROM job_runs GROUP BY job_id")}
        )
        for shard in SHARDS
    }


def events_total(shard: int) -> int:
    """Live plus archived events, in one consistent read: constant while the demo owns the shard."""
    try:
        rows = _query(shard, "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM events_archive)")
    except pymysql.MySQLError:
        return -1
    return int(rows[0][0])


def shard_state(shard: int) -> tuple[int, int, int, int]:
    """Archived rows, old rows left, users recounted, and the events they counted."""
    moved = int(_query(shard, "SELECT COUNT(*) FROM events_archive")[0][0])
    old_left = int(_query(shard, "SELECT COUNT(*) FROM events WHERE created_at < NOW() - INTERVAL 30 DAY")[0][0])
    counted, total = (int(v) for v in _query(shard, "SELECT COUNT(*), COALESCE(SUM(events), 0) FROM user_counts")[0])
    return moved, old_left, counted, total


def on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted()


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="easeoff-demo-"))
    demo: Demo | None = None
    interrupted = locked_out = False
    try:
        redis = Redis.from_url(REDIS_URL)
        token = f"{socket.gethostname()} pid {os.getpid()}"
        if not redis.set(LOCK_KEY, token, nx=True, px=30_000):
            holder = (redis.get(LOCK_KEY) or b"?").decode()
            print(f"demo: another demo is using Redis db 13 ({holder}); run this one when it is done", file=sys.stderr)
            locked_out = True
            shutil.rmtree(workdir, ignore_errors=True)
            return 1
        demo = Demo(workdir)
        demo.redis.flushdb()
        demo.keep_going()  # the flush took the lock with it
        try:
            demo.run()
        except (KeyboardInterrupt, Interrupted):
            interrupted = True
            print("\ninterrupted: stopping workers and closing connections", flush=True)
        except Exception as exc:  # a worker died, a server went away...: clean up, say what was seen
            what = str(exc) if isinstance(exc, CannotGoOn) else f"{exc.__class__.__name__}: {exc}"
            demo.problems.append(f"the demo stopped: {what}")
            say(f"!! {demo.problems[-1]}")
        if not interrupted:
            demo.summary()
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    except Exception as exc:  # setting up failed (a server down?): one line, then clean up
        print(f"demo: could not set up: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        if demo is not None:
            demo.problems.append(str(exc))
    finally:
        if demo is not None:
            demo.cleanup()
            if not locked_out and (demo.redis.get(LOCK_KEY) or b"").decode() == demo.lock_token:
                demo.redis.delete(LOCK_KEY)
    failed = interrupted or locked_out or demo is None or bool(demo.problems)
    if failed and demo is not None and not interrupted and not locked_out:
        print(f"logs kept in {workdir}:")
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if demo is not None and not failed:
        demo.redis.flushdb()
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
