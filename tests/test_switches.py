"""Contingency switches on real Redis, MariaDB and worker processes: every switch takes effect
fleet-wide within a probe interval, is undone on resume or when its TTL lapses, and each
change is in the audit log with who, when and why."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import load_config
from easeoff.feedback.levers.switches import Switch, set_switch
from easeoff.feedback.observe.exporter import Exporter
from easeoff.tasks.catalog import noop, record_run
from easeoff.tasks.meta import META_KEY
from tests.conftest import ConnectionHolder, WorkerProcesses, run_cli, stays_true, wait_until
from tests.exporter_support import parse_samples, sample
from tests.placement import misplaced

INTERVAL = 0.5


def done(redis: Redis, jobs: list[Job]) -> int:
    finished = set(FinishedJobRegistry("heavy", connection=redis).get_job_ids())
    return sum(j.id in finished for j in jobs)


def started_or_done(redis: Redis, jobs: list[Job]) -> int:
    seen = set(FinishedJobRegistry("heavy", connection=redis).get_job_ids())
    seen |= set(StartedJobRegistry("heavy", connection=redis).get_job_ids())
    return sum(j.id in seen for j in jobs)


def last_reasons(redis: Redis, job: Job) -> list[str]:
    info = Job.fetch(job.id, connection=redis, serializer=JSONSerializer).meta.get(META_KEY, {})
    return info.get("last_reasons", [])


def cli(config: Path, *args: str) -> str:
    result = run_cli("--config", str(config), *args, env={"EASEOFF_OPERATOR": "ops-alice"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def fleet(workers: WorkerProcesses, config: Path, n: int = 2) -> None:
    for _ in range(n):
        workers.start(config, "heavy")


def settle() -> None:
    """Let every worker see the switch: one probe interval and a little, measured by the clock."""
    deadline = time.monotonic() + INTERVAL * 1.5
    wait_until(lambda: time.monotonic() >= deadline, timeout=5, what="one probe interval")


def enqueue(redis: Redis, task: Callable[..., object], n: int, **kwargs: object) -> list[Job]:
    return [task.enqueue(connection=redis, **kwargs) for _ in range(n)]  # type: ignore[attr-defined]


def test_pause_and_resume_a_queue(redis_conn: Redis, shards, write_config, workers: WorkerProcesses) -> None:
    config = write_config(interval=INTERVAL)
    fleet(workers, config)
    cli(config, "pause", "queue:heavy", "--reason", "deploy 412")
    settle()
    jobs = enqueue(redis_conn, record_run, 4, shard=1, tag="paused-queue")
    stays_true(lambda: started_or_done(redis_conn, jobs) == 0, 3 * INTERVAL, what="a paused queue is not dequeued")
    assert redis_conn.llen("rq:queue:heavy") == 4  # held in the queue itself, not churned
    cli(config, "resume", "queue:heavy", "--reason", "deploy done")
    wait_until(lambda: done(redis_conn, jobs) == 4, timeout=15, what="jobs run after resume")
    assert misplaced(redis_conn, ["heavy"], [j.id for j in jobs]) == {}


def test_pause_a_task_parks_its_jobs_while_others_run(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=INTERVAL)
    fleet(workers, config)
    cli(config, "pause", "task:record_run", "--reason", "ledger migration")
    settle()
    held = enqueue(redis_conn, record_run, 3, shard=1, tag="paused-task")
    others = enqueue(redis_conn, noop, 3, shard=1)
    wait_until(lambda: done(redis_conn, others) == 3, timeout=15, what="the other task's jobs run")
    wait_until(lambda: all(last_reasons(redis_conn, j) for j in held), timeout=10, what="paused jobs deferred")
    assert last_reasons(redis_conn, held[0]) == ["paused:task:record_run (ops-alice: ledger migration)"]
    stays_true(lambda: done(redis_conn, held) == 0, 3 * INTERVAL, what="a paused task's jobs wait")
    cli(config, "resume", "task:record_run")
    wait_until(lambda: done(redis_conn, held) == 3, timeout=15, what="parked jobs released on resume")
    assert misplaced(redis_conn, ["heavy"], [j.id for j in held + others]) == {}


def test_a_paused_resource_resumes_by_itself_when_its_ttl_lapses(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=INTERVAL)
    fleet(workers, config)
    cli(config, "pause", "resource:shard:1", "--reason", "failover drill", "--ttl", "4s")
    settle()
    on_shard1 = enqueue(redis_conn, record_run, 3, shard=1, tag="paused-resource")
    on_shard2 = enqueue(redis_conn, record_run, 3, shard=2, tag="free-resource")
    wait_until(lambda: done(redis_conn, on_shard2) == 3, timeout=15, what="the other shard's jobs run")
    assert done(redis_conn, on_shard1) == 0
    assert "paused:resource:shard:1" in last_reasons(redis_conn, on_shard1[0])[0]
    wait_until(lambda: done(redis_conn, on_shard1) == 3, timeout=20, what="jobs run once the TTL lapses")
    log = json.loads(cli(config, "log", "--json"))
    assert any(e["text"].startswith("expired: pause resource:shard:1") for e in log), log
    assert json.loads(cli(config, "switches", "--json")) == []


def test_throttle_and_threshold_override_then_undo(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    # shard:2 on its own host name (the same server), so an override on shard:1's host leaves it be.
    second_host = '[mysql.hosts.db2]\nurl = "mysql://root@127.0.0.1:3306"\n'
    config = write_config(interval=INTERVAL, shard2_hosts='["db2"]', extra=second_host)
    fleet(workers, config)
    cli(config, "throttle", "record_run", "1.0", "--reason", "replica rebuild", "--ttl", "10m")
    settle()
    throttled = enqueue(redis_conn, record_run, 3, shard=2, tag="throttled")
    wait_until(lambda: last_reasons(redis_conn, throttled[0]), timeout=10, what="a throttled job deferred")
    assert last_reasons(redis_conn, throttled[0])[0].startswith("throttled:task:record_run ratio 1")
    stays_true(lambda: done(redis_conn, throttled) == 0, 3 * INTERVAL, what="ratio 1 refuses every job")
    cli(config, "unthrottle", "record_run")
    wait_until(lambda: done(redis_conn, throttled) == 3, timeout=15, what="jobs run after unthrottle")

    # A live override far below today's connection ratio (the probe does not count itself, so
    # hold a few) makes shard:1 strained, on its own.
    connections.hold(5)
    cli(config, "threshold", "connections", "--high", "0.0001", "--low", "0.00005", "--resource", "shard:1",
        "--reason", "drill", "--ttl", "10m")  # fmt: skip
    settle()
    strained = enqueue(redis_conn, record_run, 2, shard=1, tag="override")
    free = enqueue(redis_conn, record_run, 2, shard=2, tag="override-free")
    wait_until(lambda: done(redis_conn, free) == 2, timeout=15, what="shard 2 keeps the file's thresholds")
    wait_until(lambda: last_reasons(redis_conn, strained[0]), timeout=10, what="the override defers shard 1")
    assert "> high 0.0001" in last_reasons(redis_conn, strained[0])[0]
    cli(config, "threshold", "connections", "--resource", "shard:1", "--clear")
    wait_until(lambda: done(redis_conn, strained) == 2, timeout=20, what="jobs run once the override is gone")


def test_every_change_is_audited_with_who_when_and_why(redis_conn: Redis, write_config) -> None:
    config = write_config(interval=INTERVAL)
    before = time.time()
    cli(config, "pause", "all", "--reason", "incident 77", "--by", "ops-bob")
    cli(config, "resume", "all", "--reason", "incident over")
    cli(config, "host", "out", "db1", "--reason", "disk swap")
    cli(config, "annotate", "deploy 412")
    entries = json.loads(cli(config, "log", "--json"))
    assert [e["text"] for e in entries] == [
        "deploy 412",
        "host out: db1",
        "off: pause all",
        "on: pause all",
    ]
    assert [e["who"] for e in entries] == ["ops-alice", "ops-alice", "ops-alice", "ops-bob"]
    assert [e["why"] for e in entries] == ["", "disk swap", "incident over", "incident 77"]
    assert all(before - 1 <= e["at"] <= time.time() + 1 for e in entries)
    status = json.loads(cli(config, "status", "--json"))
    assert status["audit"][0]["text"] == "deploy 412"
    assert status["switches"] == []


def test_bad_switch_input_is_one_line_and_exit_2(write_config, redis_conn: Redis) -> None:
    config = write_config()
    for args, expect in [
        (["pause", "queue:nope", "--reason", "x"], "unknown queue 'nope'"),
        (["pause", "task:nope", "--reason", "x"], "nope"),
        (["pause", "shard:1", "--reason", "x"], "bad scope"),
        (["pause", "all", "--reason", "x", "--ttl", "soon"], "bad duration"),
        (["throttle", "record_run", "1.5", "--reason", "x"], "1.5"),
        (["threshold", "nope", "--high", "1", "--low", "0", "--reason", "x"], "unknown signal"),
        (["threshold", "connections", "--high", "0.1", "--low", "0.5", "--reason", "x"], "low <= high"),
    ]:
        result = run_cli("--config", str(config), *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expect in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert json.loads(run_cli("--config", str(config), "switches", "--json").stdout) == []


def test_switch_age_shows_everywhere_and_stale_ones_are_listed(redis_conn: Redis, write_config) -> None:
    """A switch left on two days is stale against a one-day limit; one turned on just now is not.
    `switches`, `switches --stale`, `status` and the exporter all carry the age."""
    config_path = write_config(extra='[switches]\nstale_after = "1d"\n')
    now = time.time()
    forgotten = Switch("pause", "queue:archive", "ops-carol", "incident 12", at=now - 2 * 86400 - 600)
    set_switch(redis_conn, forgotten)
    cli(config_path, "throttle", "record_run", "0.5", "--reason", "deploy", "--by", "ops-dan")

    listed = cli(config_path, "switches")
    assert "pause queue:archive  on 2d  STALE  by ops-carol: incident 12" in listed, listed
    assert re.search(r"throttle task:record_run ratio 0.5 until [\d: -]+  on \d+s  by ops-dan: deploy", listed), listed
    stale = cli(config_path, "switches", "--stale")
    assert "queue:archive" in stale and "record_run" not in stale, stale
    rows = {r["scope"]: r for r in json.loads(cli(config_path, "switches", "--json"))}
    assert rows["queue:archive"]["stale"] and rows["queue:archive"]["age_s"] > 2 * 86400
    assert not rows["task:record_run"]["stale"] and rows["task:record_run"]["age_s"] < 60

    status = json.loads(cli(config_path, "status", "--json"))
    by_scope = {s["scope"]: s for s in status["switches"]}
    assert by_scope["queue:archive"]["stale"] and not by_scope["task:record_run"]["stale"]
    assert "on 2d  STALE" in cli(config_path, "status")

    exporter = Exporter(redis_conn, load_config(config_path))
    samples = parse_samples(generate_latest(exporter.registry).decode())
    age = sample(samples, "easeoff_switch_age_seconds", kind="pause", scope="queue:archive")
    assert age is not None and age > 2 * 86400
    young = sample(samples, "easeoff_switch_age_seconds", kind="throttle", scope="task:record_run")
    assert young is not None and young < 60
    assert sample(samples, "easeoff_switch_stale_after_seconds") == 86400

    cli(config_path, "resume", "queue:archive", "--reason", "cleaned up")
    assert "no switch on longer than 1d" in cli(config_path, "switches", "--stale")


def test_a_switch_pulled_while_a_worker_runs_jobs_back_to_back_holds_its_very_next_claims(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    """Between back-to-back jobs a worker judges the next claim on the snapshot it read for the
    last one (for up to a quarter interval, here 5 s): the pause's wake-up word must make it
    read again, so it holds the queue at its next claim, well before that snapshot ages out,
    and claims nothing after."""
    config = write_config(interval=20.0, stale_after=120.0)
    jobs = enqueue(redis_conn, record_run, 300, shard=1, tag="back-to-back", seconds=0.02)
    workers.start(config, "heavy")
    wait_until(lambda: done(redis_conn, jobs) >= 10, timeout=30, what="the worker busy with jobs")
    set_switch(redis_conn, Switch("pause", "queue:heavy", by="ops-alice", why="now", at=time.time()))
    wait_until(lambda: "holding queue heavy" in workers.logs(), timeout=3.0, what="the worker to hold the queue")
    claimed = started_or_done(redis_conn, jobs)
    assert claimed < len(jobs), "the worker ran every job before the pause: the test proves nothing"
    stays_true(lambda: started_or_done(redis_conn, jobs) == claimed, 3.0, what="no job claimed after the pause")
