"""Chunks sized to a time target, on a sandbox MariaDB under a real worker: a resumable task's
chunks hold near 0.5 s while the rows' cost steps tenfold part-way, and a job resumed on another
worker starts at the size it learned (tasks/chunking.py).

A sandbox server of its own, not the local one: the chunks' times are the assertion, and other
tests reset the local demo databases."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.catalog import seed_weighted_rows, touch_in_sized_chunks
from easeoff.tasks.demo_schema import create_schema
from easeoff.tasks.shards import connect
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, wait_until
from tests.sandbox_support import sandbox_mod, shard_one_config

pytestmark = pytest.mark.slow

TARGET = 0.5  # the task's chunk_time
# The band every settled chunk's UPDATE must take. Its ends are less than tenfold apart (1.25 /
# 0.15 < 9) and the rows' real cost steps more than tenfold (SLEEP(0.001) ~ 1.1 ms a row,
# SLEEP(0.012) ~ 12 ms): no fixed chunk size can hold it on both sides of the step. Settled
# chunks measured 0.49-0.51 s; the slack is for a busy machine.
BAND = (0.15, 1.25)
CHEAP, DEAR = 0.001, 0.012  # seconds each row's update sleeps in MariaDB, before and after the step
STEP_AT = 4000  # rows 1..STEP_AT are cheap, the rest dear


@dataclass(frozen=True)
class Done:
    first: int
    last: int
    asked: int
    seconds: float


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    start = int(os.environ.get(sandbox_mod.PORT_ENV) or 3700)
    box = sandbox_mod.Sandbox(tmp_path_factory.mktemp("chunks") / "sb", base_port=sandbox_mod.free_base_port(start))
    try:
        box.up(shards=[1], replicas=0, shape="primary")
        yield box
    finally:
        box.down()


@pytest.fixture
def shard(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Shard 1 on the sandbox, for this test, its workers (subprocesses) and the example tasks."""
    urls = sandbox.topology().shard_urls()
    monkeypatch.setenv("EASEOFF_SHARD_URLS", json.dumps(urls))
    create_schema(1, url=urls["1"], reset=True)
    return 1


def config_for(sandbox: Any, path: Path) -> Path:
    return shard_one_config(sandbox, path, TEST_REDIS_URL, ())


def chunks_done() -> list[Done]:
    conn = connect(1)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tag FROM job_runs WHERE task = 'touch_in_sized_chunks' ORDER BY id")
            tags = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    done = []
    for tag in tags:
        span, asked, seconds = tag.removeprefix("chunk:").split(":")
        first, last = span.split("-")
        done.append(Done(int(first), int(last), int(asked), float(seconds)))
    return done


def rows_touched_once() -> bool:
    conn = connect(1)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT MIN(touched), MAX(touched) FROM weighted_rows")
            return tuple(cur.fetchone()) == (1, 1)
    finally:
        conn.close()


def finished(redis: Redis, count: int = 1) -> bool:
    return FinishedJobRegistry("heavy", connection=redis).count == count


def describe(done: list[Done]) -> str:
    return "\n".join(f"{d.first:>5}-{d.last:<5} asked {d.asked:>4}: {d.seconds:.3f}s" for d in done)


def test_chunks_hold_near_their_target_while_the_row_cost_steps_tenfold(
    redis_conn: Redis, sandbox: Any, shard: int, workers: WorkerProcesses, tmp_path: Path
) -> None:
    total = seed_weighted_rows(shard, [CHEAP] * STEP_AT + [DEAR] * 640)
    touch_in_sized_chunks.enqueue(shard=shard, initial=100, connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "chunks.toml"), "heavy")
    wait_until(lambda: finished(redis_conn), 90, interval=0.2, what="the job to finish")
    done = chunks_done()
    assert done[-1].last == total and rows_touched_once(), describe(done)

    # The step: the first chunk to reach the dear rows. It may have met only a few of them, and
    # the next, all dear at the cheap rows' size, is the slow one; or it met enough to run slow
    # itself but, half cheap, underrates the dear rows, and the next is still over (<= 2.5x).
    step = next(i for i, d in enumerate(done) if d.last > STEP_AT)
    first_over = next((i for i in range(step, len(done)) if done[i].seconds > BAND[1]), len(done))
    assert first_over <= step + 1, describe(done)  # the step shows: a chunk ran over
    assert done[first_over + 1].asked <= done[first_over].asked / 2, describe(done)  # cut at once
    assert done[step + 2].asked * 5 <= done[step].asked, describe(done)  # two chunks on: about a tenth

    settled = [*range(2, step), *range(step + 2, len(done))]  # 100 -> 200 -> ~400: two to settle
    for i in settled:
        assert done[i].seconds <= BAND[1], describe(done)
        if i < len(done) - 1:  # the last chunk may be short: what was left
            assert done[i].seconds >= BAND[0], describe(done)
    cheap = [d.asked for d in done[2:step]]
    dear = [d.asked for d in done[step + 2 : -1]]
    assert len(cheap) >= 5 and len(dear) >= 5, describe(done)
    assert max(dear) * 5 <= min(cheap), describe(done)  # the size followed the cost


def test_a_resumed_job_starts_at_the_size_it_learned(
    redis_conn: Redis, sandbox: Any, shard: int, workers: WorkerProcesses, tmp_path: Path
) -> None:
    total = seed_weighted_rows(shard, [CHEAP] * 4000)
    job = touch_in_sized_chunks.enqueue(shard=shard, initial=20, connection=redis_conn)
    config = config_for(sandbox, tmp_path / "chunks.toml")
    first = workers.start(config, "heavy")
    wait_until(lambda: len(chunks_done()) >= 6, 60, interval=0.1, what="the size to grow: 20, 40, 80, 160, 320")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0, workers.logs()
    before = len(chunks_done())
    meta = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).meta["easeoff"]
    assert meta["last_reasons"] == ["checkpoint: worker shutting down"]
    learned = meta["chunking"]["size"]
    assert learned >= 8 * 20, meta

    workers.start(config, "heavy")
    wait_until(lambda: finished(redis_conn), 60, interval=0.2, what="the job to resume and finish")
    done = chunks_done()
    assert done[-1].last == total and rows_touched_once(), describe(done)
    assert done[before].first == done[before - 1].last + 1, describe(done)  # resumed where it stopped
    assert done[before].asked == learned, describe(done)  # ... at the size it had learned, not 20
