"""Periodic jobs on real Redis: each tick enqueued once fleet-wide, through the task's own
enqueue path, whatever schedulers race or die (workers/scheduler.py)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.connection import Connection
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

import easeoff.tasks.catalog  # noqa: F401 - registers noop, the scheduled task
from easeoff.feedback.config import Config, parse_config
from easeoff.feedback.keys import schedule_key
from easeoff.feedback.schedules import due_tick
from easeoff.workers.scheduler import Scheduler, job_id_for, schedule_states
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, run_cli, wait_until

SCHEDULE = """
[schedules.tick]
task = "noop"
kwargs = { shard = 1 }
every = "2s"
"""

BASE = f"""
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{TEST_REDIS_URL}"
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[resources."shard:2"]
hosts = ["db1"]
[queues.heavy]
[queues.archive]
"""


def config(extra: str = SCHEDULE) -> Config:
    return parse_config(BASE + extra, "test.toml", {})


def queued(redis: Redis, queue: str = "heavy") -> list[str]:
    return [i.decode() for i in redis.lrange(Queue(queue, connection=redis).key, 0, -1)]


def state(redis: Redis, name: str = "tick") -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(schedule_key(name)).items()}


def test_a_schedule_starts_at_its_next_tick_and_enqueues_each_tick_once_with_easeoff_meta(redis_conn: Redis) -> None:
    cfg = config()
    assert Scheduler(redis_conn, cfg).run(1000.5) == []  # first sighting: no run for a tick before it existed
    assert queued(redis_conn) == [] and state(redis_conn)["last_tick"] == "1000000"
    fired = Scheduler(redis_conn, cfg).run(1002.1)
    assert [(f.tick, f.job_id, f.missed) for f in fired] == [(1002000, "schedule-tick-1002000", 0)]
    assert Scheduler(redis_conn, cfg).run(1003.9) == []  # same tick, a fresh scheduler: claimed already
    assert queued(redis_conn) == ["schedule-tick-1002000"]
    job = Job.fetch("schedule-tick-1002000", connection=redis_conn, serializer=JSONSerializer)
    assert job.func_name == "easeoff.tasks.catalog.noop" and job.kwargs == {"shard": 1}
    assert job.meta["easeoff"]["task"] == "noop" and job.meta["easeoff"]["resources"] == ["shard:1"]


def test_schedulers_racing_for_one_tick_enqueue_it_once(redis_conn: Redis) -> None:
    cfg = config()
    Scheduler(redis_conn, cfg).run(1000.0)
    clients = [Redis.from_url(TEST_REDIS_URL) for _ in range(8)]
    start = threading.Barrier(len(clients))
    results: list[list[object]] = []

    def race(client: Redis) -> None:
        scheduler = Scheduler(client, cfg)
        start.wait()
        results.append(list(scheduler.run(1002.5)))

    threads = [threading.Thread(target=race, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    assert sum(len(r) for r in results) == 1
    assert queued(redis_conn) == ["schedule-tick-1002000"]
    assert state(redis_conn)["runs"] == "1"


def test_a_scheduler_dead_before_exec_leaves_the_tick_for_the_next(redis_conn: Redis) -> None:
    """The claim and the job are one MULTI/EXEC: a client that dies inside it (here: sends the
    claim and the queue push, then drops its socket) leaves neither, and the next round claims."""
    cfg = config()
    Scheduler(redis_conn, cfg).run(1000.0)
    key = schedule_key("tick")
    dying = Connection(host="127.0.0.1", port=6379, db=redis_conn.connection_pool.connection_kwargs.get("db", 0))
    dying.connect()
    for command in (
        ("WATCH", key),
        ("HGET", key, "last_tick"),
        ("MULTI",),
        ("HSET", key, "last_tick", "1002000", "last_job", "schedule-tick-1002000"),
        ("RPUSH", Queue("heavy", connection=redis_conn).key, "schedule-tick-1002000"),
    ):
        dying.send_command(*command)
        dying.read_response()
    dying.disconnect()  # killed: no EXEC
    assert state(redis_conn)["last_tick"] == "1000000" and queued(redis_conn) == []
    fired = Scheduler(redis_conn, cfg).run(1002.5)
    assert [f.job_id for f in fired] == ["schedule-tick-1002000"]
    assert queued(redis_conn) == ["schedule-tick-1002000"]


def test_ticks_missed_while_nobody_ran_run_once(redis_conn: Redis) -> None:
    cfg = config()
    Scheduler(redis_conn, cfg).run(1000.0)
    fired = Scheduler(redis_conn, cfg).run(1011.0)  # ticks 1002 .. 1010 came while no scheduler ran
    assert [(f.tick, f.missed) for f in fired] == [(1010000, 4)]
    assert queued(redis_conn) == ["schedule-tick-1010000"]
    assert (state(redis_conn)["last_missed"], state(redis_conn)["missed"]) == ("4", "4")
    # (Schedules that tasks declare with @periodic are listed too: another test's may be registered.)
    listed = [s for s in schedule_states(redis_conn, cfg, 1011.0) if s.name == "tick"]
    assert [(s.name, s.last_job, s.last_missed, s.next_run) for s in listed] == [
        ("tick", "schedule-tick-1010000", 4, 1012.0)
    ]


def test_easeoff_schedules_lists_next_and_last_run(redis_conn: Redis, tmp_path: Path) -> None:
    path = tmp_path / "easeoff.toml"
    path.write_text(BASE + SCHEDULE + '\n[schedules.nightly]\ntask = "noop"\ncron = "0 2 * * *"\n', encoding="utf-8")
    cfg = config(SCHEDULE + '\n[schedules.nightly]\ntask = "noop"\ncron = "0 2 * * *"\n')
    now = time.time()
    Scheduler(redis_conn, cfg).run(now - 2)
    Scheduler(redis_conn, cfg).run(now)
    listed = run_cli("--config", str(path), "schedules", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"tick", "nightly"}
    assert rows["nightly"]["when"] == "cron 0 2 * * *" and rows["nightly"]["last_job"] is None
    assert rows["nightly"]["next_run"] % 86400 == 7200 and rows["nightly"]["next_run"] > now
    assert rows["tick"]["last_job"] == job_id_for("tick", due_tick(cfg.schedules["tick"], now))
    assert rows["tick"]["next_run"] > now
    text = run_cli("--config", str(path), "schedules")
    assert text.returncode == 0, text.stderr
    assert re.search(
        r"^tick +noop +every 2s +\S+ \S+ \((in \d+s|due now)\) +\S+ \S+ schedule-tick-\d+ ", text.stdout, re.M
    )
    assert re.search(r"^nightly +noop +cron 0 2 \* \* \* .* never", text.stdout, re.M)


def test_an_unknown_task_or_bad_arguments_stop_a_worker_at_start(redis_conn: Redis, tmp_path: Path) -> None:
    for table, words in (
        ('task = "no_such_task"\nevery = "1m"', "schedule s: unknown task 'no_such_task'"),
        ('task = "noop"\nevery = "1m"\nkwargs = { shard = 9 }', "schedule s: task noop: resource 'shard:9' is not"),
        ('task = "noop"\nevery = "1m"\nkwargs = { size = 9 }', "schedule s: task noop: bad arguments"),
    ):
        path = tmp_path / "easeoff.toml"
        path.write_text(BASE + f"[schedules.s]\n{table}\n", encoding="utf-8")
        for command in (("config", "check"), ("worker", "heavy", "--burst")):
            ran = run_cli("--config", str(path), *command)
            assert ran.returncode == 2, (command, ran.stdout, ran.stderr)
            assert ran.stderr.count("\n") == 1 and words in ran.stderr, ran.stderr


@pytest.mark.slow
def test_three_workers_enqueue_one_job_per_tick_with_one_killed_halfway(
    redis_conn: Redis, write_config, workers: WorkerProcesses
) -> None:
    """Acceptance (issue 25): a schedule every 2 s for 20 s gives 10 ± 1 jobs, none twice for
    one tick, while the worker doing the scheduling is SIGKILLed halfway. The workers listen on
    `archive` so the scheduled jobs stay on `heavy`, every enqueue counted, duplicates included."""
    path = write_config(interval=0.25, extra=SCHEDULE)
    fleet = [workers.start(path, "archive") for _ in range(3)]
    wait_until(lambda: redis_conn.hexists(schedule_key("tick"), "last_tick"), 30, what="a worker to see the schedule")
    start = time.time()
    wait_until(lambda: time.time() >= start + 10, 11, interval=0.2, what="halfway")
    scheduling = _last_to_enqueue(workers, len(fleet))
    assert scheduling is not None, workers.logs()
    workers.kill9(fleet[scheduling])
    # The window's last tick may fall a moment before its end: read a second later, count the window.
    wait_until(lambda: time.time() >= start + 21, 12, interval=0.2, what="the end")
    ids = queued(redis_conn)
    ticks = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert len(ids) == len(set(ids)), f"a tick enqueued twice: {ids}"
    assert all(t % 2000 == 0 for t in ticks), ids
    window = [t for t in ticks if start * 1000 <= t < (start + 20) * 1000]
    assert 9 <= len(window) <= 11, (ids, start, workers.logs())
    survivors = {i for i in range(len(fleet)) if i != scheduling}
    assert _enqueuers_after(workers, start + 10) & survivors, "no surviving worker took the schedule over"


def _enqueue_lines(workers: WorkerProcesses, index: int) -> list[int]:
    text = (workers.log_dir / f"worker-{index}.log").read_text(errors="replace")
    return [int(t) for t in re.findall(r"schedule tick: enqueued schedule-tick-(\d+)", text)]


def _last_to_enqueue(workers: WorkerProcesses, count: int) -> int | None:
    latest = {i: max(_enqueue_lines(workers, i), default=-1) for i in range(count)}
    best = max(latest, key=lambda i: latest[i])
    return best if latest[best] >= 0 else None


def _enqueuers_after(workers: WorkerProcesses, at: float) -> set[int]:
    count = len(list(workers.log_dir.glob("worker-*.log")))
    return {i for i in range(count) if any(t > at * 1000 for t in _enqueue_lines(workers, i))}


def test_easeoff_scheduler_once_enqueues_what_is_due(redis_conn: Redis, tmp_path: Path) -> None:
    path = tmp_path / "easeoff.toml"
    path.write_text(BASE + SCHEDULE, encoding="utf-8")
    first = run_cli("--config", str(path), "scheduler", "--once")
    assert first.returncode == 0, first.stderr
    assert queued(redis_conn) == []  # first sighting
    started_after = int(state(redis_conn)["last_tick"])
    wait_until(lambda: time.time() * 1000 >= started_after + 2000, 5, what="the next tick")
    second = run_cli("--config", str(path), "scheduler", "--once")
    assert second.returncode == 0, second.stderr
    ids = queued(redis_conn)
    assert len(ids) == 1 and int(ids[0].rsplit("-", 1)[1]) > started_after, ids
    assert f"schedule tick: enqueued {ids[0]}" in second.stderr
