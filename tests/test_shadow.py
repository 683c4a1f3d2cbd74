"""Shadow policies on real Redis, MariaDB and workers: a shadow threshold and a shadow custom
signal, both far below what the database reads, count every job they would have deferred and
defer none; a shadow threshold with a TTL lapses and counts no more."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import load_config
from easeoff.feedback.levers.switches import read_switches
from easeoff.feedback.observe.exporter import Exporter
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.tally import shadow_tally
from easeoff.tasks.catalog import noop
from easeoff.tasks.meta import META_KEY
from tests.conftest import ConnectionHolder, WorkerProcesses, run_cli, stays_true, wait_until
from tests.exporter_support import parse_samples, sample

# Any server has more than one session: a limit of 0.5 sessions is always exceeded.
SHADOW_SIGNAL = """
[signals.sessions]
query = "SELECT COUNT(*) FROM information_schema.processlist"
high = 0.5
low = 0.4
mode = "shadow"
resources = ["shard:1"]
"""


def cli(config: Path, *args: str) -> str:
    result = run_cli("--config", str(config), *args, env={"EASEOFF_OPERATOR": "ops-erin"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def counts(redis: Redis) -> dict[str, int]:
    return {f"{c.resource}|{c.signal}": c.last_hour for c in shadow_tally.read(redis, redis.time()[0])}


def finished(redis: Redis, ids: list[str]) -> int:
    done = set(FinishedJobRegistry("heavy", connection=redis).get_job_ids())
    return sum(i in done for i in ids)


def deferrals(redis: Redis, job_id: str) -> int:
    meta = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta.get(META_KEY, {})
    return int(meta.get("deferrals", 0))


def shadow_band_held(config: Path, redis: Redis) -> bool:
    reading = ReadingsCache(redis, load_config(config)).stored(["db1"]).readings["db1"]
    return reading is not None and reading.shadow_strained.get("connections", False)


def test_shadow_policies_count_would_be_deferrals_and_defer_nothing(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    connections.hold(3)  # the probe does not count itself: on a quiet server the ratio would be 0
    config = write_config(interval=0.3, extra=SHADOW_SIGNAL)
    cli(config, "threshold", "connections", "--high", "0.0001", "--low", "0.00005", "--shadow", "--reason", "trial")
    trial = read_switches(redis_conn).entries["shadow-threshold connections"]
    assert trial.shadow and trial.expires_at is not None  # the default TTL, 1h
    for _ in range(2):
        workers.start(config, "heavy")
    wait_until(lambda: shadow_band_held(config, redis_conn), 15, what="the shadow band to hold on db1")

    ids = [noop.enqueue(shard=1, connection=redis_conn).id for _ in range(20)]
    wait_until(lambda: finished(redis_conn, ids) == 20, 30, what="every job to finish")
    assert [deferrals(redis_conn, i) for i in ids] == [0] * 20, "a shadow policy deferred a job"
    assert counts(redis_conn) == {"shard:1|connections": 20, "shard:1|sessions": 20}

    status = cli(config, "status")
    assert "SHADOW (policies on trial" in status, status
    assert "shard:1       would have deferred 20 jobs in the last hour (connections)" in status, status
    assert "would defer now: " in status and "sessions:db1" in status, status
    report = json.loads(cli(config, "status", "--json"))
    assert report["resources"]["shard:1"]["verdict"] == "admit"
    assert {r.split(":")[0] for r in report["resources"]["shard:1"]["shadow"]} == {"connections", "sessions"}
    # db1 is shard:2's host too: the fleet-wide shadow threshold holds there; sessions is scoped to shard:1
    assert [r.split(":")[0] for r in report["resources"]["shard:2"]["shadow"]] == ["connections"]
    assert "shadow-threshold connections" in cli(config, "switches")
    said = [line for log in workers.log_dir.glob("worker-*.log") for line in log.read_text().splitlines()]
    shadow_lines = [line for line in said if "shadow: would have deferred job" in line]
    assert shadow_lines and "on shard:1: connections:db1" in shadow_lines[0], said[:20]
    assert len(shadow_lines) < 20  # a line per resource every few seconds, not one per job

    samples = parse_samples(generate_latest(Exporter(redis_conn, load_config(config)).registry).decode())
    assert sample(samples, "easeoff_shadow_deferrals_total", resource="shard:1", signal="connections") == 20
    assert sample(samples, "easeoff_shadow_deferrals_last_hour", resource="shard:1", signal="sessions") == 20
    assert sample(samples, "easeoff_shadow_holding", resource="shard:1") == 1
    assert sample(samples, "easeoff_shadow_signal", signal="sessions") == 1
    assert sample(samples, "easeoff_resource_held", resource="shard:1") == 0  # the real verdict, apart


def test_a_shadow_threshold_with_a_ttl_lapses_and_counts_no_more(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    connections.hold(3)  # the probe does not count itself: on a quiet server the ratio would be 0
    config = write_config(interval=0.3)
    cli(
        config,
        "threshold",
        "connections",
        "--high",
        "0.0001",
        "--low",
        "0.00005",
        "--shadow",
        "--ttl",
        "3s",
        "--reason",
        "short trial",
    )
    workers.start(config, "heavy")
    wait_until(lambda: shadow_band_held(config, redis_conn), 15, what="the shadow band to hold on db1")
    first = [noop.enqueue(shard=1, connection=redis_conn).id for _ in range(5)]
    wait_until(lambda: finished(redis_conn, first) == 5, 30, what="the first jobs to finish")
    assert counts(redis_conn) == {"shard:1|connections": 5}

    wait_until(lambda: "shadow-threshold" not in cli(config, "switches"), 10, what="the shadow threshold to lapse")
    wait_until(
        lambda: any(
            e["text"].startswith("expired: shadow-threshold connections")
            for e in json.loads(cli(config, "log", "--json"))
        ),
        10,
        what="the prober to prune the lapsed switch and log it",
    )
    wait_until(lambda: not shadow_band_held(config, redis_conn), 10, what="the shadow band to go with it")
    later = [noop.enqueue(shard=1, connection=redis_conn).id for _ in range(5)]
    wait_until(lambda: finished(redis_conn, later) == 5, 30, what="the later jobs to finish")
    stays_true(lambda: counts(redis_conn) == {"shard:1|connections": 5}, 1.0, what="no count after the lapse")
