"""Nothing easeoff reads is unpickled, and a failure's reason shows no password.

A real job fails with a connection URL (password and all) in its exception; then a pickle whose
loading would create a marker file is planted where rq keeps the job's result (`rq:results:<id>`,
its `return_value`) and in the job's own hash (`result`). The exporter's page and `/api/state`,
and `easeoff failed`, must still show the job's reason, masked, and never create the marker.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from easeoff.feedback.observe.failed_jobs import read_failed
from easeoff.workers.cli.jobs import failed_jobs, failure_reason
from tests.exporter_support import exporter_process

SECRET = "s3cret"
MESSAGE = f"cannot reach mysql://app:{SECRET}@db/x nor redis://:{SECRET}@h:6379/0?password={SECRET}"
SHOWN = "RuntimeError: cannot reach mysql://app:***@db/x nor redis://:***@h:6379/0?password=***"


def leak_url() -> None:
    """The job: it fails with connection URLs, passwords and all, in its message."""
    raise RuntimeError(MESSAGE)


class _Planted:
    """Unpickling this calls `open(path, "w")`: the marker file appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@dataclass
class FailedApp:
    config: Path
    folder: Path
    job_id: str
    marker: Path


def easeoff(folder: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`easeoff` run from a folder of the operator's, as the console script runs (no `-m`)."""
    return subprocess.run(
        [sys.executable, "-m", "easeoff.workers.cli", "--config", str(config), *args],
        cwd=folder,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def app_failure(tmp_path: Path, write_config, redis_conn: Redis) -> FailedApp:
    """A real failure, as rq records it: a plain JSON job run by rq's own worker, in process."""
    job = Queue("heavy", connection=redis_conn, serializer=JSONSerializer).enqueue(leak_url)
    SimpleWorker(["heavy"], connection=redis_conn, serializer=JSONSerializer).work(burst=True)
    assert FailedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [job.id]
    return FailedApp(write_config(), tmp_path, job.id, tmp_path / "unpickled-marker")


@pytest.fixture
def failed_app(app_failure: FailedApp, redis_conn: Redis) -> FailedApp:
    """The same, with a pickle planted in its newest result and in its job hash."""
    payload = pickle.dumps(_Planted(str(app_failure.marker)))
    exc_string = f"Traceback (most recent call last):\n  ...\nRuntimeError: {MESSAGE}\n"
    redis_conn.xadd(
        Result.get_key(app_failure.job_id),
        {
            "type": str(Result.Type.FAILED.value),
            "worker_name": "planted",
            "exc_string": base64.b64encode(zlib.compress(exc_string.encode())).decode(),
            "return_value": base64.b64encode(payload).decode(),
        },
    )
    redis_conn.hset(Job.key_for(app_failure.job_id), "result", payload)
    return app_failure


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_the_exporter_page_and_state_never_unpickle_and_mask_the_reason(failed_app: FailedApp, tmp_path: Path) -> None:
    with exporter_process(failed_app.config, tmp_path) as exporter:
        page = get(f"{exporter.url}/")
        state = json.loads(get(f"{exporter.url}/api/state"))
    assert not failed_app.marker.exists(), "the exporter unpickled a planted result"
    (newest,) = state["state"]["failed"]["newest"]
    assert newest["id"] == failed_app.job_id and newest["task"] == "leak_url"
    assert newest["reason"] == SHOWN
    assert failed_app.job_id in page and "cannot reach mysql://app:***@db/x" in page
    assert SECRET not in page and SECRET not in json.dumps(state)


def test_easeoff_failed_never_unpickles_and_masks_the_reason(failed_app: FailedApp) -> None:
    table = easeoff(failed_app.folder, failed_app.config, "failed", "heavy")
    listed = easeoff(failed_app.folder, failed_app.config, "failed", "--json")
    assert not failed_app.marker.exists(), "easeoff failed unpickled a planted result"
    assert table.returncode == 0 and listed.returncode == 0, table.stderr + listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["id"] == failed_app.job_id and row["reason"] == SHOWN
    assert failed_app.job_id in table.stdout and SHOWN in table.stdout
    assert SECRET not in table.stdout + table.stderr + listed.stdout + listed.stderr


def test_a_real_failure_reads_masked_through_both_readers(app_failure: FailedApp, redis_conn: Redis) -> None:
    """The reason as rq wrote it (nothing planted): the page's reader and the CLI's agree."""
    assert [(j.id, j.reason) for j in read_failed(redis_conn, ["heavy"]).jobs] == [(app_failure.job_id, SHOWN)]
    assert [(j.id, j.reason) for j in failed_jobs(redis_conn, "heavy", 20)] == [(app_failure.job_id, SHOWN)]
    job = Job.fetch(app_failure.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert failure_reason(job) == SHOWN
