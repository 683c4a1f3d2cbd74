"""What operators see and can do: held queues, unknown resources, failed jobs put back,
and a plain rq worker that must not run easeoff's jobs ungated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.catalog import noop, record_run
from easeoff.tasks.meta import META_KEY
from tests.conftest import (
    REPO,
    TEST_REDIS_URL,
    ConnectionHolder,
    WorkerProcesses,
    run_cli,
    wait_until,
)
from tests.placement import misplaced
from tests.test_worker_gate import ledger_count, strain_thresholds, wait_for_probes

RQ = str(Path(sys.executable).parent / "rq")


def test_a_plain_rq_worker_refuses_easeoff_jobs_and_they_can_be_requeued(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low)
    connections.hold(40)  # shard 1 strained: a gated worker would defer the job
    job = record_run.enqueue(shard=1, tag="plain-rq", connection=redis_conn)
    plain = subprocess.run(
        [RQ, "worker", "-u", TEST_REDIS_URL, "-S", "json", "--burst", "heavy"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stderr
    assert ledger_count(1, "plain-rq") == 0  # the task did not run
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    assert failed.get_job_ids() == [job.id]

    listing = run_cli("--config", str(config), "failed", "heavy")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job.id))
    assert "record_run" in row and "refused to run ungated" in row, row

    requeued = run_cli("--config", str(config), "requeue", "--all", "heavy")
    assert requeued.returncode == 0 and requeued.stdout.strip() == "requeued 1 of 1 jobs", requeued
    assert redis_conn.lrange("rq:queue:heavy", 0, -1) == [job.id.encode()] and failed.count == 0
    kept = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).meta[META_KEY]
    assert kept["resources"] == ["shard:1"] and kept["task"] == "record_run"

    workers.start(config, "heavy")  # the gated worker holds it while shard 1 is strained ...
    wait_until(lambda: ScheduledJobRegistry("heavy", connection=redis_conn).count == 1, 20, what="job deferred")
    assert ledger_count(1, "plain-rq") == 0
    connections.hold(0)  # ... and runs it once, when the strain clears
    wait_until(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 1, 30, what="job run")
    assert ledger_count(1, "plain-rq") == 1
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


def test_a_job_on_an_unknown_resource_is_shown_then_failed_after_the_grace(
    redis_conn: Redis, write_config, workers: WorkerProcesses
) -> None:
    """Configs out of step during a deploy: the app enqueued on a shard this worker's config lacks."""
    config = write_config(backoff_extra="unknown_resource_grace = 3")
    job = noop.enqueue(shard=9, connection=redis_conn)  # no config check: an app with a newer config
    workers.start(config, "heavy")

    def unknown_in_status() -> dict | None:
        report = json.loads(run_cli("--config", str(config), "status", "--json").stdout)
        return report["resources"].get("shard:9")

    shown = wait_until(unknown_in_status, 20, what="status to show the unknown resource")
    assert shown["verdict"] == "defer" and shown["unknown"] is True
    assert re.match(r"unknown_resource:shard:9 \(not in the config; job of noop seen \d+s ago", shown["reasons"][0])
    probed = json.loads(run_cli("--config", str(config), "probe", "--json").stdout)["resources"]["shard:9"]
    assert probed["unknown"] is True and probed["reasons"][0].startswith("unknown_resource:shard:9 (not in the config")

    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: failed.count == 1, 20, what="the job to fail after the grace, not a day later")
    info = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).meta[META_KEY]
    assert 3 <= info["deferred_at"] - info["unknown_since"] < 10
    listing = run_cli("--config", str(config), "failed", "--json")
    reasons = {j["id"]: j["reason"] for j in json.loads(listing.stdout)}
    assert "resource 'shard:9' is not in the config (still unknown after 3s)" in reasons[job.id]


def test_holds_are_logged_once_and_shown_in_status(
    redis_conn: Redis, write_config, workers: WorkerProcesses, tmp_path: Path
) -> None:
    config = write_config(interval=0.3)
    paused = run_cli("--config", str(config), "pause", "queue:heavy", "--reason", "migration")
    assert paused.returncode == 0, paused.stderr
    noop.enqueue(shard=1, connection=redis_conn)
    workers.start(config, "heavy")
    wait_until(lambda: "holding queue heavy" in workers.logs(), 20, what="the hold logged")
    status = run_cli("--config", str(config), "status")
    row = next(line for line in status.stdout.splitlines() if line.startswith("heavy "))
    assert re.search(r"paused:queue:heavy \(\S+: migration\)$", row), row
    held = json.loads(run_cli("--config", str(config), "status", "--json").stdout)["queues"]
    assert held["heavy"]["held"][0].startswith("paused:queue:heavy") and held["archive"]["held"] == []
    # Many probe intervals pass while the queue stays held; the hold is logged once, not per poll.
    wait_for_probes(redis_conn, "db1", 1.5, what="five more probe intervals")
    assert workers.logs().count("holding queue heavy") == 1, workers.logs()
    assert run_cli("--config", str(config), "resume", "queue:heavy").returncode == 0
    wait_until(lambda: "released queue heavy" in workers.logs(), 20, what="the release logged")
    wait_until(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 1, 20, what="the job ran")
    assert workers.logs().count("released queue heavy") == 1


def test_any_queue_lets_a_worker_listen_on_a_queue_nobody_declared(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    Queue("adhoc", connection=redis_conn, serializer=JSONSerializer)
    refused = run_cli("--config", config, "worker", "adhoc", "--burst")
    assert refused.returncode == 2 and "unknown queue 'adhoc'" in refused.stderr
    allowed = run_cli("--config", config, "worker", "adhoc", "--burst", "--any-queue")
    assert allowed.returncode == 0, allowed.stderr
