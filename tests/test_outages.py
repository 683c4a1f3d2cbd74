"""Redis goes away and comes back: workers and the exporter wait it out and carry on.

The outage is real but private: a redis-server of the test's own (AOF on, so the restart
keeps every acknowledged write), so the machine's Redis and the other tests are untouched.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from easeoff.feedback.config import load_config
from easeoff.tasks.catalog import archive_in_chunks, noop, record_run
from easeoff.tasks.demo_schema import seed_events
from easeoff.workers.gated_worker import GatedWorker
from tests.conftest import WorkerProcesses, stays_true, wait_until
from tests.exporter_support import exporter_process, sample
from tests.placement import misplaced


def _no_new_chunk_for(seconds: float) -> Callable[[], bool]:
    """A predicate for `wait_until`: true once `archive_in_chunks` has committed no chunk for `seconds`."""
    from tests.test_resumable import chunk_ranges

    seen = {"count": -1, "since": time.monotonic()}

    def quiet() -> bool:
        count = len(chunk_ranges())
        if count != seen["count"]:
            seen.update(count=count, since=time.monotonic())
        return time.monotonic() - seen["since"] >= seconds

    return quiet


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        self.proc = subprocess.Popen([*args, "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                                     stdout=subprocess.DEVNULL)  # fmt: skip
        wait_until(self.answers, timeout=20, what="the private redis-server")

    def answers(self) -> bool:
        try:
            return bool(Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except OSError:
            return False
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_workers_and_the_exporter_ride_out_a_redis_restart(
    private_redis: PrivateRedis, shards, write_config, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = write_config(redis_url=private_redis.url)
    redis = Redis.from_url(private_redis.url)
    worker = workers.start(config, "heavy")
    with exporter_process(config, tmp_path) as exporter:
        before = [record_run.enqueue(shard=1, tag="outage", connection=redis) for _ in range(3)]
        finished = FinishedJobRegistry("heavy", connection=redis)
        wait_until(lambda: finished.count == 3, timeout=20, what="jobs before the outage")

        private_redis.stop()
        wait_until(lambda: sample(exporter.metrics(), "easeoff_redis_up") == 0, 10, what="the scrape to see it")
        stays_true(lambda: worker.poll() is None, 4, what="the worker waits out the outage")

        private_redis.start()
        redis = Redis.from_url(private_redis.url)
        assert FinishedJobRegistry("heavy", connection=redis).count == 3  # AOF kept what was done
        after = [record_run.enqueue(shard=1, tag="outage", connection=redis) for _ in range(3)]
        done = FinishedJobRegistry("heavy", connection=redis)
        wait_until(lambda: done.count == 6, timeout=40, what="the same worker to carry on after the outage")
        assert worker.poll() is None
        assert set(done.get_job_ids()) == {j.id for j in before + after}
        wait_until(lambda: sample(exporter.metrics(), "easeoff_redis_up") == 1, 10, what="the scrape to recover")
    assert "Redis is back" in workers.logs()


def test_a_job_claimed_as_redis_dies_is_not_lost_when_the_next_job_ends(
    private_redis: PrivateRedis, write_config, tmp_path: Path
) -> None:
    """Redis goes away between the claim and the start of the run: the worker waits for it with
    the claimed job (ours: nobody else may take it within a grace of Redis's return), then runs
    it; the next job to run ends its own execution, not the first one's (which once unlisted
    the first job: lost)."""
    redis = Redis.from_url(private_redis.url)
    first, second = (noop.enqueue(shard=1, connection=redis) for _ in range(2))
    worker = GatedWorker(["heavy"], connection=redis, config=load_config(write_config(redis_url=private_redis.url)))
    claimed = worker.dequeue_job_and_maintain_ttl(None)
    assert claimed is not None and claimed[0].id == first.id

    private_redis.stop()
    restart = threading.Timer(1.0, private_redis.start)
    restart.start()
    worker.execute_job(*claimed)  # cannot even record the start; waits for Redis to come back
    restart.join()

    redis = Redis.from_url(private_redis.url)
    assert FinishedJobRegistry("heavy", connection=redis).get_job_ids() == [first.id]
    nxt = worker.dequeue_job_and_maintain_ttl(None)
    assert nxt is not None and nxt[0].id == second.id
    worker.execute_job(*nxt)
    assert set(FinishedJobRegistry("heavy", connection=redis).get_job_ids()) == {first.id, second.id}
    assert misplaced(redis, ["heavy"], [first.id, second.id]) == {}
    assert StartedJobRegistry("heavy", connection=redis).get_job_ids() == []


def test_a_resumable_job_that_meets_a_read_only_redis_at_a_checkpoint_is_deferred_not_failed(
    private_redis: PrivateRedis, shards, write_config, workers: WorkerProcesses
) -> None:
    """A failover turns the primary into a replica under a running resumable job: its next
    checkpoint's write is refused (READONLY). Its chunks are committed and safe to run again, so
    the job is deferred and resumes once Redis takes writes, finishing with every row archived
    once; no retry is spent and nothing lands in failed."""
    from rq.registry import FailedJobRegistry

    from tests.test_resumable import assert_each_old_row_archived_once, chunk_ranges, meta

    old_rows = seed_events(1, users=20, per_user=50) // 2
    redis = Redis.from_url(private_redis.url)
    config = write_config(redis_url=private_redis.url, interval=0.3, backoff_base=0.3, backoff_cap=0.6)
    job = archive_in_chunks.enqueue(shard=1, batch_size=25, pause=0.15, connection=redis)
    workers.start(config, "archive")
    wait_until(lambda: len(chunk_ranges()) >= 3, 20, what="a few chunks done")

    with socket.socket() as s:  # a primary that never answers: this server stays a read-only replica
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
    redis.execute_command("REPLICAOF", "127.0.0.1", str(nowhere))
    try:
        wait_until(_no_new_chunk_for(1.5), 20, what="the job to stop at a checkpoint")
    finally:
        redis.execute_command("REPLICAOF", "NO", "ONE")

    wait_until(lambda: FinishedJobRegistry("archive", connection=redis).count == 1, 60, what="the job to finish")
    assert FailedJobRegistry("archive", connection=redis).count == 0
    info = meta(redis, job.id)
    assert info["deferrals"] >= 1
    assert any("Redis unreachable at a checkpoint: ReadOnlyError" in r for r in info["last_reasons"]), info
    assert_each_old_row_archived_once(old_rows)
