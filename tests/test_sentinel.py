"""Redis through Sentinel: a real primary, replica and three sentinels; the primary SIGKILLed
while workers run and defer jobs; the replica promoted; the workers and the CLI carry on
through the Sentinel URL, and every job is reckoned."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback import clock
from easeoff.feedback.config import load_config
from easeoff.feedback.connect import REDIS_UNREACHABLE, connect
from easeoff.feedback.replica_acks import keep_waiting
from easeoff.tasks.catalog import noop, record_run
from easeoff.workers.cli.jobs import failure_reason
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, run_cli, stays_true, wait_until
from tests.sandbox_support import load_script

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[object]:
    with load_script("sentinels").RedisSentinels(tmp_path / "redis") as running:
        yield running
    # connect() made this process's clock follow the Redis that is now gone: give it the suite's.
    clock.follow(Redis.from_url(TEST_REDIS_URL))


def reckon(redis: Redis, ids: list[str]) -> dict[str, int]:
    """Where each job is: finished, failed, waiting somewhere a worker will find it (a queue,
    scheduled, started, parked), stranded (its hash says one thing, no list or registry holds
    it: a move the replica never got), or lost (no hash at all: enqueued, never replicated)."""
    counts = {"finished": 0, "failed": 0, "waiting": 0, "stranded": 0, "lost": 0}
    queued = {j.decode() for j in redis.lrange("rq:queue:heavy", 0, -1)}
    scheduled = set(ScheduledJobRegistry("heavy", connection=redis).get_job_ids())
    started = set(StartedJobRegistry("heavy", connection=redis).get_job_ids())
    parked = {m.decode().split("|")[0] for key in redis.scan_iter("easeoff:parked:*") for m in redis.zrange(key, 0, -1)}
    for job_id in ids:
        status = redis.hget(f"rq:job:{job_id}", "status")
        if status is None:
            counts["lost"] += 1
        elif status == JobStatus.FINISHED.value.encode():
            counts["finished"] += 1
        elif status == JobStatus.FAILED.value.encode():
            counts["failed"] += 1
        elif job_id in queued | scheduled | started | parked:
            counts["waiting"] += 1
            where = [
                n
                for n, place in (("queued", queued), ("scheduled", scheduled), ("started", started), ("parked", parked))
                if job_id in place
            ]
            counts[f"waiting:{'+'.join(where)}"] = counts.get(f"waiting:{'+'.join(where)}", 0) + 1
        else:
            counts["stranded"] += 1
    return counts


def test_workers_and_the_cli_ride_a_sentinel_failover(tmp_path: Path, write_config, sentinels, shards) -> None:
    config_path = write_config(redis_url=sentinels.url(db=0))  # a Redis of its own, not the suite's
    config = load_config(config_path)
    redis = connect(config)
    workers = WorkerProcesses(tmp_path)
    try:
        for _ in range(2):
            workers.start(config_path, "heavy")
        # Shard 2's jobs are deferred (its task paused), shard 1's run.
        assert (
            run_cli("--config", str(config_path), "pause", "resource:shard:2", "--reason", "failover test").returncode
            == 0
        )
        before = [
            record_run.enqueue(shard=1 + i % 2, tag="failover", seconds=0.05, connection=redis).id for i in range(40)
        ]
        wait_until(lambda: reckon(redis, before)["finished"] >= 5, 30, what=f"jobs to run; logs: {workers.logs()}")

        old_port = sentinels.primary()[1]
        sentinels.kill_primary()
        sentinels.wait_promoted(away_from=old_port, timeout=60)

        after = [record_run.enqueue(shard=1, tag="failover", seconds=0.05, connection=redis).id for _ in range(10)]
        try:
            wait_until(
                lambda: reckon(redis, after)["finished"] == len(after), 60, what="jobs after the failover to run"
            )
        except BaseException:
            print(f"after: {reckon(redis, after)}; logs: {workers.logs()}")
            raise
        status = run_cli("--config", str(config_path), "status")
        assert status.returncode == 0, status.stderr

        # Shard 1's jobs all end (or were lost with the primary's last writes, and are counted):
        # none stays in `started`, as one did while a work horse could be forked with a probe
        # thread inside OpenSSL (feedback/signals/probe_connection.py, _FORK_GUARD).
        shard1 = [j for i, j in enumerate(before) if i % 2 == 0]

        # 40 s: past the abandoned-job grace, so the sweep has had its go at jobs running at the kill.
        try:
            wait_until(lambda: reckon(redis, shard1)["waiting"] == 0, 40, interval=0.2, what="shard 1's jobs to end")
        except BaseException:
            print(f"shard 1: {reckon(redis, shard1)}; logs: {workers.logs()}")
            raise
        counts = reckon(redis, before)
        print(f"after the failover: {counts} of {len(before)} jobs enqueued before it")
        assert sum(n for place, n in counts.items() if ":" not in place) == len(before)
        assert reckon(redis, [j for i, j in enumerate(before) if i % 2 == 1])["finished"] == 0
        for job_id in before:  # a failed job says why
            job = (
                Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
                if redis.exists(f"rq:job:{job_id}")
                else None
            )
            if job is not None and job.get_status() == JobStatus.FAILED:
                reason = failure_reason(job)
                assert reason, f"job {job_id} failed without a reason"
                print(f"failed: {job_id}: {reason}")
    finally:
        workers.stop_all()


@pytest.mark.parametrize("acks", [1, 0], ids=["replica-acks", "no-acks"])
def test_a_move_acknowledged_by_a_replica_survives_the_failover(
    tmp_path: Path, write_config, sentinels, shards, acks: int
) -> None:
    """An app enqueues steadily while workers claim and finish, through the primary's death and
    its return as a replica. With `replica_acks = 1` no enqueue the app was told succeeded is
    lost, and no job is stranded; without it, what the dead primary took with it is counted."""
    config_path = write_config(
        redis_url=sentinels.url(db=0), redis_extra=f"replica_acks = {acks}\nreplica_ack_timeout = 0.5"
    )
    config = load_config(config_path)
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def enqueue_steadily() -> None:
        redis = connect(config)
        while not stop.wait(0.02):
            try:
                accepted.append(noop.enqueue(shard=1, connection=redis).id)
            except REDIS_UNREACHABLE as exc:
                refused.append(type(exc).__name__)

    workers = WorkerProcesses(tmp_path)
    enqueuer = threading.Thread(target=enqueue_steadily, daemon=True)
    try:
        for _ in range(2):
            workers.start(config_path, "heavy")
        enqueuer.start()
        wait_until(lambda: len(accepted) >= 100, 30, what="enqueues before the kill")
        old_port = sentinels.primary()[1]
        sentinels.kill_primary()
        sentinels.wait_promoted(away_from=old_port, timeout=60)
        if acks:  # the promoted primary has no replica yet: its writes are refused, not lost
            wait_until(lambda: "ReplicaAckTimeout" in refused, 30, what="a write no replica acknowledged")
        sentinels.rejoin_killed()
        resumed = len(accepted)
        wait_until(lambda: len(accepted) >= resumed + 50, 60, what="enqueues after the failover")
        stop.set()
        enqueuer.join(timeout=30)
        redis = connect(config)
        try:
            wait_until(lambda: reckon(redis, accepted)["waiting"] == 0, 90, interval=0.2, what="every job to end")
        except BaseException:
            print(f"jobs: {reckon(redis, accepted)}; logs: {workers.logs()}")
            raise
        counts = reckon(redis, accepted)
        print(f"replica_acks={acks}: {len(accepted)} enqueues accepted, {len(refused)} refused; {counts}")
        assert sum(n for place, n in counts.items() if ":" not in place) == len(accepted)
        assert counts["finished"] > 0
        if acks:
            assert counts["lost"] == 0 and counts["stranded"] == 0, counts
    finally:
        stop.set()
        workers.stop_all()


def test_workers_ride_out_a_spell_in_which_no_replica_acknowledges(
    tmp_path: Path, write_config, sentinels, shards
) -> None:
    """With `replica_acks = 1` a write no replica acknowledges fails (as after a failover, before
    the old primary rejoins as a replica): reads still answer, so a worker that took that for
    Redis being back would quit at its next write. Workers, and one starting meanwhile, wait for
    acknowledged writes and carry on; every job ends once the replica answers again."""
    acks = "replica_acks = 1\nreplica_ack_timeout = 0.3"
    config_path = write_config(redis_url=sentinels.url(db=0), redis_extra=acks)
    redis = connect(load_config(config_path))
    keep_waiting(redis)  # this app's enqueues wait out a slow acknowledgement: the workers are on trial
    workers = WorkerProcesses(tmp_path)
    replica = sentinels.procs["replica"]
    try:
        for _ in range(2):
            workers.start(config_path, "heavy")
        ids = [record_run.enqueue(shard=1, tag="no-acks", seconds=0.05, connection=redis).id for _ in range(120)]
        wait_until(lambda: reckon(redis, ids)["finished"] >= 10, 30, what=f"jobs to run; logs: {workers.logs()}")
        replica.send_signal(signal.SIGSTOP)
        try:
            # One starting in the spell, with a host of its own to probe: its first writes (the
            # probe lease, before it loads its tasks) wait too.
            own_host = write_config(redis_url=sentinels.url(db=0), redis_extra=acks, shard2_hosts='["dead"]')
            workers.start(own_host, "heavy")
            wait_until(lambda: workers.logs().count("replicas acknowledged") >= 3, 30, what="writes refused")
            stays_true(lambda: all(p.poll() is None for p in workers.procs), 3, what="workers running")
        finally:
            replica.send_signal(signal.SIGCONT)
        try:
            wait_until(lambda: reckon(redis, ids)["finished"] == len(ids), 60, interval=0.2, what="every job to end")
        except BaseException:
            print(f"jobs: {reckon(redis, ids)}; logs: {workers.logs()}")
            raise
        assert all(p.poll() is None for p in workers.procs), workers.logs()
    finally:
        replica.send_signal(signal.SIGCONT)
        workers.stop_all()
