"""Every strain signal on real replication: lag, replication threads, master-master pairs.

Two shards of the sandbox (a master-master pair plus one replica each) run for the
module. Jobs write to their shard's pair through EASEOFF_SHARD_URLS; only the shard
under strain waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import load_config
from easeoff.feedback.levers.hosts_out import mark_in, mark_out
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.verdict.gate import judge
from easeoff.tasks.catalog import record_run
from easeoff.tasks.demo_schema import create_schema
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, stays_true, wait_until
from tests.placement import misplaced
from tests.sandbox_support import sandbox_mod

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("replication")
    box = sandbox_mod.Sandbox(base / "sb", base_port=sandbox_mod.free_base_port(3700, shards=(1, 2)))
    try:
        topology = box.up(shards=[1, 2], replicas=1)
        for shard, url in topology.shard_urls().items():
            create_schema(int(shard), url=url, reset=True)
        box.wait_synced(timeout=30)
        yield box
    finally:
        box.down()


@pytest.fixture
def shard_env(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers (subprocesses) and the example tasks find each shard's writer in the sandbox."""
    import json

    monkeypatch.setenv("EASEOFF_SHARD_URLS", json.dumps(sandbox.topology().shard_urls()))


def topology_config(sandbox: Any, path: Path) -> Path:
    hosts = "".join(
        f'[mysql.hosts.{name}]\nurl = "{inst.url}"\n' for name, inst in sandbox.topology().instances.items()
    )
    path.write_text(
        f"""
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{TEST_REDIS_URL}"
[probe]
interval = 0.3
timeout = 0.5
[backoff]
base = 0.3
cap = 0.6
{hosts}
[resources."shard:1"]
pair = ["s1a", "s1b"]
replicas = ["s1r1"]
[resources."shard:2"]
pair = ["s2a", "s2b"]
replicas = ["s2r1"]
[signals.connections]
high = 0.95
low = 0.9
[signals.lag]
high = 1.5
low = 0.5
[queues.heavy]
""",
        encoding="utf-8",
    )
    return path


def last_reasons(redis: Redis, job_id: str) -> list[str]:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta["easeoff"]["last_reasons"]


def deferred_ids(redis: Redis) -> set[str]:
    return set(ScheduledJobRegistry("heavy", connection=redis).get_job_ids())


def finished_ids(redis: Redis) -> set[str]:
    return set(FinishedJobRegistry("heavy", connection=redis).get_job_ids())


def shard_verdicts(redis: Redis, config: Path) -> dict[str, list[str]]:
    """Probe every host now (writers stamp their heartbeat) and judge both shards."""
    loaded = load_config(config)
    snapshot = ReadingsCache(redis, loaded).probe_now()
    return {name: judge([name], snapshot, loaded, time.time()).texts for name in ("shard:1", "shard:2")}


def run_strain_case(redis: Redis, workers: WorkerProcesses, config: Path, reason_prefix: str) -> list[str]:
    """Shard 1 strained: its jobs defer with a reason naming signal and host; shard 2's run."""
    wait_until(
        lambda: (
            (v := shard_verdicts(redis, config))
            and any(r.startswith(reason_prefix) for r in v["shard:1"])
            and not v["shard:2"]
        ),
        20,
        interval=0.3,
        what=f"the probes to see {reason_prefix!r} on shard 1 only",
    )
    held = [record_run.enqueue(shard=1, tag="held", connection=redis).id for _ in range(3)]
    free = [record_run.enqueue(shard=2, tag="free", connection=redis).id for _ in range(3)]
    workers.start(config, "heavy")
    wait_until(
        lambda: set(held) <= deferred_ids(redis) and set(free) <= finished_ids(redis),
        30,
        what="shard 1 deferred, shard 2 run",
    )
    for job_id in held:
        assert any(r.startswith(reason_prefix) for r in last_reasons(redis, job_id)), last_reasons(redis, job_id)
    return held


def test_lag_defers_only_its_shard_and_resumes_under_low(
    sandbox: Any, shard_env: None, redis_conn: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = topology_config(sandbox, tmp_path / "lag.toml")
    sandbox.delay("s1r1", 4)
    try:
        held = run_strain_case(redis_conn, workers, config, "lag:s1r1 ")
        reason = next(r for r in last_reasons(redis_conn, held[0]) if r.startswith("lag:"))
        assert "> high 1.5" in reason or "not yet below low 0.5" in reason
    finally:
        sandbox.delay("s1r1", 0)
    wait_until(lambda: set(held) <= finished_ids(redis_conn), 30, what="shard 1 to resume once lag is gone")
    assert misplaced(redis_conn, ["heavy"], held) == {}


def test_stopped_sql_thread_defers_with_a_reason(
    sandbox: Any, shard_env: None, redis_conn: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = topology_config(sandbox, tmp_path / "sql.toml")
    sandbox.stop_sql("s1r1")
    try:
        held = run_strain_case(redis_conn, workers, config, "replication:s1r1 (")
        assert "sql thread stopped" in " ".join(last_reasons(redis_conn, held[0]))
    finally:
        sandbox.start_sql("s1r1")
    wait_until(lambda: set(held) <= finished_ids(redis_conn), 30, what="shard 1 to resume")


def test_pair_half_marked_out_defers_its_shard(
    sandbox: Any, shard_env: None, redis_conn: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = topology_config(sandbox, tmp_path / "out.toml")
    mark_out(redis_conn, "s1b", "replacing a disk", by="test")
    held = run_strain_case(redis_conn, workers, config, "host_out:s1b (replacing a disk)")
    mark_in(redis_conn, "s1b")
    wait_until(lambda: set(held) <= finished_ids(redis_conn), 30, what="shard 1 to resume once s1b is back in")


def test_pair_half_unreachable_defers_its_shard(
    sandbox: Any, shard_env: None, redis_conn: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = topology_config(sandbox, tmp_path / "down.toml")
    sandbox.kill("s1b")
    try:
        held = run_strain_case(redis_conn, workers, config, "probe_error:s1b ")
    finally:
        sandbox.start("s1b")
    wait_until(lambda: set(held) <= finished_ids(redis_conn), 45, what="shard 1 to resume once s1b is back")


def test_predict_holds_a_shard_while_lag_rises_below_high_and_releases_it_when_lag_falls(
    sandbox: Any, redis_conn: Redis, tmp_path: Path
) -> None:
    path = topology_config(sandbox, tmp_path / "predict.toml")
    text = path.read_text(encoding="utf-8").replace(
        "[signals.lag]\nhigh = 1.5\nlow = 0.5", "[signals.lag]\nhigh = 6.0\nlow = 1.0\npredict = 10"
    )
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    cache = ReadingsCache(redis_conn, config)

    def shard1() -> tuple[list[str], float]:
        snapshot = cache.probe_now()
        reading = snapshot.get("s1r1")
        assert reading is not None and reading.error is None, reading
        return judge(["shard:1"], snapshot, config, time.time()).texts, reading.values["lag"]

    wait_until(lambda: shard1()[0] == [], 20, interval=0.1, what="shard 1 healthy before the step")
    stays_true(lambda: shard1()[0] == [], 1.0, what="a steady, near-zero lag to predict nothing")
    sandbox.delay("s1r1", 5)  # real lag, rising a second a second to 5 s: never past high
    try:
        reasons, lag = wait_until(
            lambda: (found := shard1()) and any("predicted" in r for r in found[0]) and found,
            20,
            interval=0.2,
            what="rising lag to be predicted",
        )
        assert lag < 6.0 and any(r.startswith("lag:s1r1 ") and "predicted to reach high 6" in r for r in reasons)
        print(f"held at lag {lag:.2f}s: {reasons}")
    finally:
        sandbox.delay("s1r1", 0)
    wait_until(lambda: shard1()[0] == [], 20, interval=0.2, what="falling lag to release the shard")
