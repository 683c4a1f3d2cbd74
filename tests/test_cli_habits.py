"""What rq and Celery users expect of a command line: `--version`, no silent example config,
`--log-level` and JSON logs, `enqueue --json`, rq's exit codes. Real Redis, real processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry

from easeoff.feedback import clock, keys
from easeoff.feedback.config import packaged_example_path
from easeoff.feedback.levers.switches import Switch, set_switch
from tests.conftest import REPO, run_cli, wait_until

CHATTY = """
import logging

from easeoff import heavy_task


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"])
def chatty(shard: int) -> None:
    logging.getLogger("myapp").warning("chatty on shard %s", shard)
"""


def cli_in(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    """`easeoff ARGS` from `folder`, in a shell that names no config."""
    clean = {
        k: v for k, v in os.environ.items() if k not in ("EASEOFF_CONFIG", "EASEOFF_LOG_LEVEL", "EASEOFF_LOG_FORMAT")
    }
    return subprocess.run(
        [sys.executable, "-m", "easeoff.workers.cli", *args],
        cwd=folder,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.unit
def test_version_is_the_installed_distributions() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"easeoff {metadata.version('easeoff')}"


@pytest.mark.unit
@pytest.mark.parametrize("command", [("worker", "heavy", "--burst"), ("exporter", "--port", "0"), ("status",)])
def test_no_config_is_an_error_not_the_packaged_example(tmp_path: Path, command: tuple[str, ...]) -> None:
    """With no --config, no $EASEOFF_CONFIG and no ./easeoff.toml, nothing runs on the example's
    redis://127.0.0.1:6379/0: one line says where easeoff looked and how to give a config."""
    try:
        result = cli_in(tmp_path, *command, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`easeoff {' '.join(command)}` ran with no config")
    line = one_error_line(result, 2)
    assert str(tmp_path / "easeoff.toml") in line and "no such file" in line, line
    assert "--config" in line and "EASEOFF_CONFIG" in line and "easeoff config init" in line, line
    assert str(packaged_example_path()) in line, line


@pytest.mark.unit
def test_the_example_runs_when_asked_for_by_path(tmp_path: Path) -> None:
    check = cli_in(tmp_path, "config", "check", env={"EASEOFF_CONFIG": str(packaged_example_path())})
    assert check.returncode == 0 and "easeoff.example.toml: ok" in check.stdout, check.stderr
    (tmp_path / "easeoff.toml").write_text(packaged_example_path().read_text())
    found = cli_in(tmp_path, "config", "check")
    assert found.returncode == 0 and found.stdout.startswith("easeoff.toml: ok"), found.stderr


def test_redis_unreachable_exits_1_and_bad_input_exits_2(write_config) -> None:
    """rq's exit codes: a supervisor restarts on 1 (an outage passes), not on 2 (a typo stays)."""
    away = str(write_config(redis_url="redis://127.0.0.1:1/0"))
    for args in (["status"], ["enqueue", "noop", "--args", '{"shard": 1}'], ["worker", "heavy", "--burst"]):
        line = one_error_line(run_cli("--config", away, *args), 1)
        assert line.startswith("easeoff: error: cannot reach Redis at redis://127.0.0.1:1/0"), line
    good = str(write_config())
    one_error_line(run_cli("--config", good, "enqueue", "no_such_task"), 2)
    one_error_line(run_cli("--config", good, "--log-level", "loud", "status"), 2)
    one_error_line(run_cli("--config", good, "worker", "heavvy"), 2)


def test_enqueue_json_prints_every_job(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    result = run_cli("--config", config, "enqueue", "noop", "--args", '{"shard": 2}', "--count", "12", "--json")
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert len(jobs) == 12  # all of them: the text output stops at ten
    queued = Queue("heavy", connection=redis_conn).job_ids
    assert [job["id"] for job in jobs] == queued
    first = jobs[0]
    assert (first["queue"], first["task"], first["resources"]) == ("heavy", "noop", ["shard:2"])
    assert (first["args"], first["kwargs"]) == ([], {"shard": 2}) and first["enqueued_at"]


def test_json_logs_one_object_a_line_with_the_job(redis_conn: Redis, write_config, tmp_path: Path) -> None:
    (tmp_path / "chatty_tasks.py").write_text(CHATTY)
    config = str(write_config())
    base = ["--config", config, "--import", "chatty_tasks", "-P", str(tmp_path)]
    enqueued = run_cli(*base, "enqueue", "chatty", "--args", '{"shard": 1}', "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)[0]["id"]

    result = run_cli(*base, "--log-format", "json", "worker", "heavy", "--burst", timeout=60)
    assert result.returncode == 0, result.stderr
    assert FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids() == [job_id]
    records = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    by_task = [r for r in records if r["message"] == "chatty on shard 1"]
    assert by_task and by_task[0]["logger"] == "myapp" and by_task[0]["level"] == "WARNING", records
    assert (by_task[0]["job_id"], by_task[0]["queue"], by_task[0]["task"]) == (job_id, "heavy", "chatty")
    assert any(r["logger"] == "rq.worker" and r["level"] == "INFO" for r in records)

    run_cli(*base, "enqueue", "chatty", "--args", '{"shard": 1}')
    quiet = run_cli(*base, "--log-level", "warning", "worker", "heavy", "--burst", timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert any("chatty on shard 1" in line for line in lines), lines
    assert not any(" INFO " in line for line in lines), lines  # rq's info lines are below warning


@pytest.mark.parametrize("in_process", [False, True], ids=["forking", "in-process"])
def test_json_logs_give_each_job_record_its_id_task_queue_and_reason(
    redis_conn: Redis, write_config, tmp_path: Path, in_process: bool
) -> None:
    """A real worker, one job deferred (its shard paused) and one run: every record that names one
    of them carries its `job_id`, `queue` and `task` as fields (rq's own records in the work horse
    too), and the deferral its `reason`, apart from the message's text."""
    (tmp_path / "chatty_tasks.py").write_text(CHATTY)
    config = str(write_config(interval=0.25, backoff_base=0.2, backoff_cap=0.3))
    base = ["--config", config, "--import", "chatty_tasks", "-P", str(tmp_path)]
    set_switch(redis_conn, Switch("pause", "resource:shard:2", "test", "hold it", clock.now()))
    held = json.loads(run_cli(*base, "enqueue", "chatty", "--args", '{"shard": 2}', "--json").stdout)[0]["id"]
    ran = json.loads(run_cli(*base, "enqueue", "chatty", "--args", '{"shard": 1}', "--json").stdout)[0]["id"]
    mode = ["--in-process"] if in_process else []
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "easeoff.workers.cli", *base, "--log-format", "json", "worker", "heavy", *mode],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        finished = FinishedJobRegistry("heavy", connection=redis_conn)
        wait_until(lambda: finished.get_job_ids() == [ran], 30, what="the job on shard 1 run")
        wait_until(lambda: redis_conn.zscore(keys.parked_key("shard:2"), f"{held}|heavy"), 30, what="the other parked")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    records = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    about = {job_id: [r for r in records if job_id in r["message"]] for job_id in (held, ran)}
    assert about[held] and about[ran], records
    for job_id, told in about.items():
        for record in told:
            fields = (record.get("job_id"), record.get("queue"), record.get("task"))
            assert fields == (job_id, "heavy", "chatty"), record
    deferred = [r for r in about[held] if r.get("event") == "deferred"]
    assert deferred and deferred[0]["reason"].startswith("paused:resource:shard:2"), about[held]
    assert deferred[0]["reason"] in deferred[0]["message"]
    assert [r["event"] for r in about[ran] if "event" in r] == ["claimed"], about[ran]
    assert any("Job OK" in r["message"] for r in about[ran]), about[ran]  # rq's own, from the work horse
    by_task = [r for r in records if r["message"] == "chatty on shard 1"]
    assert by_task and (by_task[0]["job_id"], by_task[0]["task"]) == (ran, "chatty"), records


def test_an_unknown_queue_names_each_known_queue_once(redis_conn: Redis, write_config) -> None:
    """Queues the config names, that a task names and that rq has seen, each listed once."""
    config = str(write_config())
    run_cli("--config", config, "enqueue", "noop", "--args", '{"shard": 1}')  # rq has now seen `heavy`
    Queue("elsewhere", connection=redis_conn).enqueue("os.getpid")
    for args in (("worker", "heavvy"), ("failed", "heavvy"), ("pause", "queue:heavvy", "--reason", "x")):
        line = one_error_line(run_cli("--config", config, *args), 2)
        known = line.split("(known: ", 1)[1].split(";")[0].rstrip(")").split(", ")
        assert len(known) == len(set(known)) and {"heavy", "archive", "recount", "elsewhere"} <= set(known), line


@pytest.mark.unit
def test_a_record_about_another_job_keeps_its_own_fields() -> None:
    """Pure: the job in hand completes a record about itself (rq passes only id and queue on a
    failure) and supplies one that names no job, but never relabels a record about another job."""
    from easeoff.workers.logs import handling_job, job_fields

    def record(**extra: str) -> logging.LogRecord:
        made = logging.LogRecord("rq.worker", logging.INFO, __file__, 1, "m", None, None)
        made.__dict__.update(extra)
        return made

    with handling_job("j1", "heavy", "chatty"):
        assert job_fields(record()) == {"job_id": "j1", "queue": "heavy", "task": "chatty"}
        assert job_fields(record(job_id="j1", queue="heavy")) == {"job_id": "j1", "queue": "heavy", "task": "chatty"}
        assert job_fields(record(job_id="j2", queue="other")) == {"job_id": "j2", "queue": "other"}
    assert job_fields(record()) == {}
