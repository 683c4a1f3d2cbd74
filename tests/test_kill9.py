"""Workers SIGKILLed in a loop while deferring and running jobs: every job stays in exactly one place."""

from __future__ import annotations

import random
import time

from redis import Redis

from easeoff.tasks.catalog import record_run
from tests.conftest import WorkerProcesses, wait_until
from tests.placement import census, misplaced


def test_kill9_loop_leaves_every_job_in_exactly_one_place(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    # shard:2 also depends on an unreachable host, so its jobs are deferred again and again
    # while shard:1's jobs run: kills land in claims, deferrals, promotions and runs alike.
    config = write_config(shard2_hosts='["db1", "dead"]', interval=0.2, backoff_base=0.2, backoff_cap=0.4)
    job_ids = [
        record_run.enqueue(shard=1 + i % 2, tag="kill9", seconds=0.02, connection=redis_conn).id for i in range(300)
    ]
    rng = random.Random(2)
    live = [workers.start(config, "heavy") for _ in range(3)]
    kills = 0
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.5))  # kill at random moments, not a wait for a condition
        victim = live.pop(rng.randrange(len(live)))
        workers.kill9(victim)
        kills += 1
        live.append(workers.start(config, "heavy"))

    for proc in live:
        workers.kill9(proc)
    # Orphaned work horses finish their job on their own; wait for them to settle.
    wait_until(
        lambda: census(redis_conn, ["heavy"], job_ids)["started"] == 0 or not misplaced(redis_conn, ["heavy"], job_ids),
        20,
        what="orphaned work horses to finish",
    )
    problems = misplaced(redis_conn, ["heavy"], job_ids)
    counts = census(redis_conn, ["heavy"], job_ids)
    assert kills >= 10
    assert problems == {}, f"{len(problems)} jobs misplaced: {list(problems.items())[:5]}; census {counts}"
    assert counts["finished"] > 0 and counts["scheduled"] + counts["queue"] > 0, counts
