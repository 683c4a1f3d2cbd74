"""The exporter on real Redis (and MariaDB readings, and a real gated worker for the counters)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from easeoff.feedback.config import Config, load_config
from easeoff.feedback.levers import events
from easeoff.feedback.levers.hosts_out import mark_out
from easeoff.feedback.levers.limits import Leases, LeaseScope
from easeoff.feedback.observe.exporter import Exporter, evaluation_ticks
from easeoff.feedback.tally import unknown_resources
from easeoff.feedback.verdict.cooldown import parked_key
from easeoff.feedback.verdict.cooldown import publish as publish_cooldowns
from easeoff.tasks.catalog import noop
from tests.conftest import REPO, run_cli, wait_until
from tests.exporter_support import Samples, exporter_process, parse_samples, sample

MARKS = """
[queues.heavy.watermarks.depth]
high = 3
low = 1
for = 0
[resources."shard:1".concurrency]
min = 2
max = 4
"""


def scrape(registry: CollectorRegistry) -> Samples:
    return parse_samples(generate_latest(registry).decode())


@pytest.fixture
def config(write_config) -> Config:
    return load_config(write_config(extra=MARKS))


def test_empty_queues_export_zero_and_every_configured_thing_has_a_series(redis_conn: Redis, config: Config) -> None:
    exporter = Exporter(redis_conn, config)
    exporter.evaluate()
    samples = scrape(exporter.registry)
    for queue in ("heavy", "archive", "recount"):
        for name in (
            "easeoff_queue_ready_jobs",
            "easeoff_queue_deferred_jobs",
            "easeoff_queue_running_jobs",
            "easeoff_queue_failed_jobs",
            "easeoff_queue_oldest_job_age_seconds",
        ):
            assert sample(samples, name, queue=queue) == 0, (name, queue)
    assert sample(samples, "easeoff_queue_watermark", queue="heavy", measure="depth", mark="high") == 3
    assert sample(samples, "easeoff_queue_watermark", queue="heavy", measure="depth", mark="low") == 1
    assert sample(samples, "easeoff_host_out", host="db1") == 0
    assert sample(samples, "easeoff_probe_ok", host="db1") == 0  # never probed: no reading yet
    assert sample(samples, "easeoff_resource_held", resource="shard:1") == 1  # fail closed: no reading
    assert sample(samples, "easeoff_resource_hold_reasons", resource="shard:1", reason="no_reading") == 1
    assert sample(samples, "easeoff_resource_cooling", resource="shard:2") == 0
    assert sample(samples, "easeoff_resource_parked_jobs", resource="shard:2") == 0
    assert sample(samples, "easeoff_concurrency_limit", resource="shard:1") == 2
    assert sample(samples, "easeoff_concurrency_leases", resource="shard:1") == 0
    assert sample(samples, "easeoff_global_held") == 0
    assert sample(samples, "easeoff_workers") == 0
    assert sample(samples, "easeoff_redis_up") == 1
    # A drained queue under its low mark: the low-water alarm fires (for = 0).
    low = {"queue": "heavy", "measure": "depth", "mark": "low", "alertname": "EaseoffQueueDepthLow"}
    assert sample(samples, "easeoff_queue_watermark_alert", **low) == 2


def test_depth_age_and_the_alarm_state_follow_the_queue(redis_conn: Redis, config: Config) -> None:
    exporter = Exporter(redis_conn, config)
    registry, monitor = exporter.registry, exporter.monitor
    high = {"queue": "heavy", "measure": "depth", "mark": "high"}
    alert = {**high, "alertname": "EaseoffQueueDepthHigh"}
    jobs = [noop.enqueue(shard=1, connection=redis_conn) for _ in range(4)]
    exporter.evaluate()
    samples = scrape(registry)
    assert sample(samples, "easeoff_queue_ready_jobs", queue="heavy") == 4
    assert 0 <= sample(samples, "easeoff_queue_oldest_job_age_seconds", queue="heavy") < 60
    assert sample(samples, "easeoff_queue_watermark_alert", **alert) == 2
    assert sample(samples, "easeoff_queue_watermark_transitions_total", **high, state="firing") == 1

    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    for job in jobs[:2]:
        queue.remove(job)
    exporter.evaluate()
    samples = scrape(registry)  # 2 jobs: between the marks, still firing (hysteresis)
    assert sample(samples, "easeoff_queue_ready_jobs", queue="heavy") == 2
    assert sample(samples, "easeoff_queue_watermark_alert", **alert) == 2
    for job in jobs[2:]:
        queue.remove(job)
    exporter.evaluate()
    samples = scrape(registry)
    assert sample(samples, "easeoff_queue_watermark_alert", **alert) == 0
    assert sample(samples, "easeoff_queue_watermark_transitions_total", **high, state="inactive") == 1
    assert [a.alertname for a in monitor.firing()] == ["EaseoffQueueDepthLow"]


def test_the_age_is_the_head_jobs_and_a_deep_queue_costs_no_more_reads(redis_conn: Redis, config: Config) -> None:
    """200,000 ids in the list, a job hash only for the head: the scrape reads the head, not the list."""
    head = Job.create("easeoff.tasks.catalog.noop", connection=redis_conn, serializer=JSONSerializer, id="head")
    head.enqueued_at = head.created_at
    redis_conn.hset(head.key, mapping={"enqueued_at": utcformat(head.created_at), "status": "queued"})
    key = Queue("heavy", connection=redis_conn).key
    with redis_conn.pipeline(transaction=False) as pipe:
        pipe.rpush(key, "head")
        for start in range(0, 200_000 - 1, 10_000):
            pipe.rpush(key, *(f"id{i}" for i in range(start, min(start + 10_000, 199_999))))
        pipe.execute()
    registry = Exporter(redis_conn, config).registry
    started = time.perf_counter()
    samples = scrape(registry)
    elapsed = time.perf_counter() - started
    assert sample(samples, "easeoff_queue_ready_jobs", queue="heavy") == 200_000
    assert sample(samples, "easeoff_queue_oldest_job_age_seconds", queue="heavy") < 60
    assert elapsed < 5, elapsed  # generous: reading the list would take far longer; the benchmark measures


def test_counters_readings_and_verdicts_after_a_real_worker_ran(
    redis_conn: Redis, config: Config, write_config
) -> None:
    path = write_config(extra=MARKS)
    for _ in range(3):
        noop.enqueue(shard=1, connection=redis_conn)
    result = run_cli("--config", str(path), "worker", "heavy", "--burst", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    samples = scrape(Exporter(redis_conn, config).registry)
    assert sample(samples, "easeoff_jobs_started_total", queue="heavy", task="noop") == 3
    assert sample(samples, "easeoff_jobs_finished_total", queue="heavy", task="noop") == 3
    assert sample(samples, "easeoff_queue_ready_jobs", queue="heavy") == 0
    assert sample(samples, "easeoff_probe_ok", host="db1") == 1
    assert sample(samples, "easeoff_probe_ok", host="dead") == 0  # port 1: the probe failed
    connections = sample(samples, "easeoff_signal_value", host="db1", signal="connections")
    assert connections is not None and 0 <= connections < 1
    assert sample(samples, "easeoff_signal_strained", host="db1", signal="connections") == 0
    assert sample(samples, "easeoff_signal_threshold", host="db1", signal="connections", level="high") == 0.95
    assert sample(samples, "easeoff_signal_threshold", host="db1", signal="connections", level="low") == 0.90
    assert sample(samples, "easeoff_reading_age_seconds", host="db1") < 60
    assert sample(samples, "easeoff_resource_hold_reasons", resource="shard:1", reason="unknown_resource") is None
    assert sample(samples, "easeoff_resource_critical", resource="shard:1") == 0


def test_switches_limits_and_deferral_counters(redis_conn: Redis, config: Config) -> None:
    run_cli("--config", config.source, "probe")  # fresh readings, so only the switches hold anything
    mark_out(redis_conn, "db1", "disk swap", by="ops")
    publish_cooldowns(redis_conn, config, {"shard:2": ["connections:db1 0.97 > high 0.95"]})
    redis_conn.zadd(parked_key("shard:2"), {"job-a|heavy": time.time(), "job-b|heavy": time.time()})
    leases = Leases(redis_conn, config)
    assert leases.acquire([LeaseScope("shard:1", 2)], "worker-1:exec-1") is None
    redis_conn.hincrby("easeoff:counters:deferred", "heavy|noop|connections", 5)
    samples = scrape(Exporter(redis_conn, config).registry)
    assert sample(samples, "easeoff_host_out", host="db1") == 1
    assert sample(samples, "easeoff_resource_held", resource="shard:1") == 1
    assert sample(samples, "easeoff_resource_hold_reasons", resource="shard:1", reason="host_out") == 1
    assert sample(samples, "easeoff_resource_cooling", resource="shard:2") == 1
    assert sample(samples, "easeoff_resource_cooling", resource="shard:1") == 0
    assert sample(samples, "easeoff_resource_parked_jobs", resource="shard:2") == 2
    assert sample(samples, "easeoff_concurrency_leases", resource="shard:1") == 1
    assert sample(samples, "easeoff_jobs_deferred_total", queue="heavy", task="noop", reason="connections") == 5


def test_unreadable_redis_answers_the_scrape_with_redis_up_zero(config: Config) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/15", socket_connect_timeout=0.5)
    exporter = Exporter(dead, config)
    samples = scrape(exporter.registry)
    assert sample(samples, "easeoff_redis_up") == 0
    assert not any(name.startswith("easeoff_queue") for name, _ in samples)


def test_an_evaluation_reports_each_transition_once(redis_conn: Redis, config: Config) -> None:
    service = Exporter(redis_conn, config)
    for _ in range(4):
        noop.enqueue(shard=1, connection=redis_conn)
    transitions = service.evaluate()  # for = 0: straight to firing, as in Prometheus
    assert [(t.alarm.alertname, t.before, t.after) for t in transitions] == [
        ("EaseoffQueueDepthHigh", "inactive", "firing")
    ]
    assert service.evaluate() == []
    logged = events.recent(redis_conn, 10)
    assert [(e.kind, e.text.split(":")[0]) for e in logged] == [("watermark", "EaseoffQueueDepthHigh queue=heavy")]


@pytest.mark.unit
def test_evaluation_ticks_keep_an_exact_schedule_until_stopped() -> None:
    stop = threading.Event()
    ticks = []
    for tick in evaluation_ticks(1000.0, 0.02, stop):  # a start in the past: missed ticks are skipped
        ticks.append(tick)
        if len(ticks) == 4:
            stop.set()
    assert len(ticks) == 4
    assert ticks[0] == 1000.0
    steps = [round((b - a) / 0.02, 3) for a, b in itertools.pairwise(ticks[1:])]
    assert all(step == int(step) and step >= 1 for step in steps), steps


# -- the command ---------------------------------------------------------------------------------


def listening_address(port: int) -> str:
    """The local address of the socket listening on `port`, from the kernel's own table."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(address) == 8:
                    return ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                return address
    raise AssertionError(f"nothing listens on {port}")


def test_exporter_command_binds_loopback_serves_and_logs_transitions(
    redis_conn: Redis, write_config, tmp_path: Path
) -> None:
    path = write_config(extra=MARKS)
    with exporter_process(path, tmp_path, "--evaluate-every", "0.2") as exporter:
        assert exporter.url.startswith("http://127.0.0.1:")
        assert listening_address(exporter.port) == "127.0.0.1"
        samples = exporter.metrics()
        assert sample(samples, "easeoff_queue_ready_jobs", queue="heavy") == 0
        assert sample(samples, "easeoff_redis_up") == 1
        assert any(name.startswith("process_") for name, _ in samples)

        for _ in range(4):
            noop.enqueue(shard=1, connection=redis_conn)
        # Nobody scrapes now: the exporter's own ticker sees the queue cross its high mark.
        wait_until(
            lambda: "EaseoffQueueDepthHigh queue=heavy: inactive -> firing (depth 4 above high 3" in exporter.output(),
            timeout=10,
            what="the high-water transition in the exporter's log",
        )
        assert "WARNING water mark EaseoffQueueDepthHigh queue=heavy: inactive -> firing" in exporter.output()
        assert "water mark EaseoffQueueDepthLow queue=heavy: firing -> inactive" in exporter.output()

        busy = run_cli("--config", str(path), "exporter", "--port", str(exporter.port), timeout=30)
        assert busy.returncode == 2, busy.stderr
        assert busy.stderr.strip().splitlines() == [
            f"easeoff: error: cannot listen on 127.0.0.1:{exporter.port}: Address already in use"
        ]
        assert exporter.stop() == 0
        assert "easeoff exporter: stopped" in exporter.output()
        assert "Traceback" not in exporter.output()


def test_exporter_host_option_and_bad_input(write_config) -> None:
    config = str(write_config())
    result = run_cli("--config", config, "exporter", "--port", "70000")
    assert result.returncode == 2 and "70000" in result.stderr, result.stderr
    result = run_cli("--config", config, "exporter", "--host", "203.0.113.9", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("easeoff: error: cannot listen on 203.0.113.9:0"), result.stderr
    unreachable = run_cli("--config", config, "exporter", env={"EASEOFF_REDIS_URL": "redis://127.0.0.1:1/15"})
    assert unreachable.returncode == 1 and "cannot reach Redis" in unreachable.stderr, unreachable.stderr


@pytest.mark.unit
def test_exporter_entry_point_is_importable_first() -> None:
    """A command module imported before the group (as an app's tooling might) finds the same helpers."""
    code = (
        "import click, easeoff.workers.cli.observability, easeoff.workers.cli as c\n"
        "print([c.cli.get_command(click.Context(c.cli), n).name for n in c.cli.list_commands(click.Context(c.cli))])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "'alerts'" in result.stdout and "'dashboard'" in result.stdout and "'exporter'" in result.stdout


def test_a_resource_jobs_name_that_the_config_lacks_is_exported_held(redis_conn: Redis, config: Config) -> None:
    with redis_conn.pipeline() as pipe:
        unknown_resources.note(pipe, ["shard:9"], "recount", time.time())
        pipe.execute()
    samples = scrape(Exporter(redis_conn, config).registry)
    assert sample(samples, "easeoff_resource_held", resource="shard:9") == 1
    assert sample(samples, "easeoff_resource_hold_reasons", resource="shard:9", reason="unknown_resource") == 1
    assert sample(samples, "easeoff_resource_hold_reasons", resource="shard:1", reason="unknown_resource") is None
