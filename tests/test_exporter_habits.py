"""The exporter's habits of the ecosystem: `easeoff_build_info`, job run-time and queue-wait
histograms per queue and task (feedback/tally/job_times.py), and `/healthz`."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis

from easeoff import __version__
from easeoff.feedback.config import Config, load_config
from easeoff.feedback.observe.exporter import Exporter
from easeoff.feedback.observe.web import ExporterServer, Site
from easeoff.feedback.tally import job_times
from easeoff.tasks.catalog import noop
from tests.conftest import run_cli
from tests.exporter_support import Samples, parse_samples, sample


def scrape(registry: CollectorRegistry) -> Samples:
    return parse_samples(generate_latest(registry).decode())


@pytest.fixture
def config(write_config) -> Config:
    return load_config(write_config())


@pytest.mark.unit
@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0.0, "0.1"), (0.1, "0.1"), (0.1001, "0.25"), (59.0, "60.0"), (7200.0, "7200.0"), (7200.5, "+Inf"), (-1, "0.1")],
)
def test_each_observation_falls_in_one_bucket_from_a_tenth_of_a_second_to_two_hours(seconds: float, label: str) -> None:
    assert job_times.bucket_label(max(seconds, 0.0)) == label


@pytest.mark.unit
def test_buckets_are_added_up_for_prometheus() -> None:
    raw = {b"heavy|noop|0.1": b"2", b"heavy|noop|1.0": b"1", b"heavy|noop|+Inf": b"1", b"heavy|noop|sum": b"9000.5"}
    (h,) = job_times.parse(raw)
    counts = dict(h.buckets)
    assert (h.queue, h.task, h.sum) == ("heavy", "noop", 9000.5)
    assert counts["0.1"] == 2 and counts["0.5"] == 2 and counts["1.0"] == 3 and counts["7200.0"] == 3
    assert h.buckets[-1] == ("+Inf", 4)
    assert [c for _, c in h.buckets] == sorted(c for _, c in h.buckets)  # cumulative


def test_a_jobs_clocks_go_into_the_pipeline_it_ends_in(redis_conn: Redis) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with redis_conn.pipeline() as pipe:
        job_times.record_job(pipe, "heavy", "t", start, start + timedelta(seconds=3), start + timedelta(seconds=45))
        job_times.record_job(pipe, "heavy", "t", None, None, None)  # no clocks: nothing
        assert len(pipe.command_stack) == 4  # queued, sent with the transaction: no round trip of their own
        pipe.execute()
    run = job_times.parse(redis_conn.hgetall("easeoff:counters:run_seconds"))
    wait = job_times.parse(redis_conn.hgetall("easeoff:counters:queue_wait_seconds"))
    assert dict(run[0].buckets)["30.0"] == 0 and dict(run[0].buckets)["60.0"] == 1 and run[0].sum == 42
    assert dict(wait[0].buckets)["2.5"] == 0 and dict(wait[0].buckets)["5.0"] == 1 and wait[0].sum == 3


def test_a_real_worker_times_its_jobs_and_the_exporter_shows_histograms(
    redis_conn: Redis, config: Config, write_config
) -> None:
    path = write_config()
    for _ in range(3):
        noop.enqueue(shard=1, connection=redis_conn)
    result = run_cli("--config", str(path), "worker", "heavy", "--burst", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    samples = scrape(Exporter(redis_conn, config).registry)
    for name in ("easeoff_job_run_seconds", "easeoff_job_queue_wait_seconds"):
        assert sample(samples, f"{name}_count", queue="heavy", task="noop") == 3, name
        assert sample(samples, f"{name}_bucket", queue="heavy", task="noop", le="+Inf") == 3, name
        assert sample(samples, f"{name}_bucket", queue="heavy", task="noop", le="7200.0") == 3, name
        total = sample(samples, f"{name}_sum", queue="heavy", task="noop")
        assert total is not None and 0 < total < 60, (name, total)
    assert sample(samples, "easeoff_job_run_seconds_bucket", queue="heavy", task="noop", le="0.1") == 3  # no-ops


def test_build_info_names_the_version_whether_or_not_redis_answers(redis_conn: Redis, config: Config) -> None:
    assert sample(scrape(Exporter(redis_conn, config).registry), "easeoff_build_info", version=__version__) == 1
    dead = Redis.from_url("redis://127.0.0.1:1/15", socket_connect_timeout=0.5)
    samples = scrape(Exporter(dead, config).registry)
    assert sample(samples, "easeoff_build_info", version=__version__) == 1
    assert sample(samples, "easeoff_redis_up") == 0


@contextmanager
def serving(redis_conn: Redis, config: Config) -> Iterator[str]:
    server = ExporterServer("127.0.0.1", 0, Site(CollectorRegistry(), redis_conn, config))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_is_200_while_redis_answers_and_503_when_it_does_not(redis_conn: Redis, config: Config) -> None:
    with serving(redis_conn, config) as url:
        assert get(f"{url}/healthz") == (200, "ok\n")
    dead = Redis.from_url("redis://127.0.0.1:1/15", socket_connect_timeout=0.5)
    with serving(dead, config) as url:
        status, body = get(f"{url}/healthz")
        assert status == 503 and "cannot read Redis" in body, (status, body)
