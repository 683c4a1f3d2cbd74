"""Concurrency limits: AIMD as a property, leases on real Redis, and a fleet that adapts."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from feedback.config import ConcurrencyConfig, load_config
from feedback.limits import Leases, LeaseScope, aimd_step, current_limits, lease_ttl
from tasks.catalog import record_run
from tests.conftest import ConnectionHolder, WorkerProcesses, wait_until
from tests.test_worker_gate import strain_thresholds

LIMITED = """
[resources."shard:9"]
hosts = ["db1"]
[resources."shard:9".concurrency]
min = 1
max = 4
"""


@given(
    limit=st.integers(min_value=1, max_value=64),
    low=st.integers(min_value=1, max_value=8),
    span=st.integers(min_value=0, max_value=56),
    strained=st.booleans(),
    saturated=st.booleans(),
)
def test_aimd_stays_in_bounds_and_moves_the_right_way(
    limit: int, low: int, span: int, strained: bool, saturated: bool
) -> None:
    cfg = ConcurrencyConfig(min=low, max=low + span)
    new = aimd_step(limit, strained, saturated, cfg)
    assert cfg.min <= new <= cfg.max
    clamped = max(cfg.min, min(cfg.max, limit))
    if strained:
        assert new <= clamped
    elif saturated:
        assert clamped <= new <= clamped + 1
    else:
        assert new == clamped


def test_leases_refuse_when_full_keep_a_slot_for_normal_priority_and_lapse(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(interval=0.5))
    leases = Leases(redis_conn, config)
    two = [LeaseScope("shard:1", 2)]
    assert leases.acquire(two, "a") is None
    refusal = leases.acquire(two, "b", reserve=1)  # low priority: the last slot stays free
    assert refusal is not None and refusal.reason.startswith("yield:shard:1 1/2")
    assert leases.acquire(two, "b") is None
    refusal = leases.acquire(two, "c")
    assert refusal is not None and refusal.reason == "concurrency:shard:1 2/2 in use"

    # Taking slots is all or nothing across scopes.
    both = [LeaseScope("task:t", 5), LeaseScope("shard:1", 2)]
    assert leases.acquire(both, "d") is not None
    assert redis_conn.zcard("easeoff:leases:task:t") == 0

    # A holder that stops renewing loses its slot once the lease TTL passes.
    with redis_conn.pipeline() as pipe:
        Leases.release(two, "a", pipe)
        pipe.execute()
    assert leases.acquire(two, "c") is None
    expiry = redis_conn.zscore("easeoff:leases:shard:1", "b")
    assert expiry is not None and expiry <= time.time() + lease_ttl(config) + 0.1


def test_killed_worker_frees_its_lease_within_the_ttl(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config_path = write_config(interval=0.5, extra=LIMITED.replace('"shard:9"', '"shard:3"'))
    config = load_config(config_path)
    # The example task writes to shard 1's database; its job is re-labelled to touch the
    # limited resource shard:3 (both live on db1).
    job = record_run.enqueue(shard=1, tag="lease", seconds=6, connection=redis_conn)
    job.meta["easeoff"]["resources"] = ["shard:3"]
    job.save_meta()
    victim = workers.start(config_path, "heavy")
    wait_until(lambda: redis_conn.zcard("easeoff:leases:shard:3") == 1, 15, what="the job to hold a lease")
    killed_at = time.monotonic()
    workers.kill9(victim)
    wait_until(
        lambda: redis_conn.zcount("easeoff:leases:shard:3", time.time(), "+inf") == 0,
        lease_ttl(config) + 2,
        what="the dead worker's lease to lapse",
    )
    assert time.monotonic() - killed_at <= lease_ttl(config) + 1.5


def test_adaptive_limit_falls_under_strain_and_recovers(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config_path = write_config(
        interval=0.3, high=high, low=low, backoff_base=0.3, backoff_cap=0.6, extra=LIMITED.replace("shard:9", "shard:4")
    )
    config = load_config(config_path)

    def enqueue(n: int) -> None:
        for _ in range(n):
            job = record_run.enqueue(shard=1, tag="aimd", seconds=0.4, connection=redis_conn)
            job.meta["easeoff"]["resources"] = ["shard:4"]
            job.save_meta()

    enqueue(60)
    for _ in range(4):
        workers.start(config_path, "heavy")
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] >= 3, 30, what="the limit to grow")

    connections.hold(40)
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] == 1, 15, what="the limit to fall")

    connections.hold(0)
    enqueue(40)
    wait_until(lambda: current_limits(redis_conn, config)["shard:4"][0] >= 2, 30, what="the limit to recover")


def test_a_finished_job_hands_its_slot_straight_back(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config_path = write_config(interval=0.5, extra=LIMITED.replace("shard:9", "shard:5"))
    for _ in range(6):
        job = record_run.enqueue(shard=1, tag="slot", connection=redis_conn)
        job.meta["easeoff"]["resources"] = ["shard:5"]
        job.save_meta()
    started = time.monotonic()
    proc = workers.start(config_path, "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    # One slot, six jobs: each must release its lease as it ends, not wait for the TTL to lapse.
    assert time.monotonic() - started < 6 * lease_ttl(load_config(config_path)) / 2
    assert redis_conn.zcard("easeoff:leases:shard:5") == 0
