"""The CLI on bad input: one line naming what is wrong, exit 2, nothing enqueued."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from easeoff.workers.cli import COMMANDS
from tests.conftest import REPO, run_cli


def assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.unit
def test_config_check_accepts_a_good_file(write_config) -> None:
    result = run_cli("--config", str(write_config()), "config", "check")
    assert result.returncode == 0, result.stderr
    assert ": ok (2 hosts, 2 resources, 1 signals, 3 queues" in result.stdout


@pytest.mark.unit
def test_malformed_config_names_file_and_key(tmp_path: Path, write_config) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(write_config().read_text().replace("high = 0.95", "high = 'very'"))
    result = run_cli("--config", str(bad), "config", "check")
    assert_one_line_error(result, str(bad), "signals.connections.high", "expected a number")

    broken = tmp_path / "broken.toml"
    broken.write_text("[redis\n")
    assert_one_line_error(run_cli("--config", str(broken), "status"), str(broken), "not valid TOML")
    assert_one_line_error(run_cli("--config", str(tmp_path / "nope.toml"), "config", "check"), "no such file")


def test_unknown_task_is_refused(redis_conn: Redis, write_config) -> None:
    result = run_cli("--config", str(write_config()), "enqueue", "no_such_task", "--args", "[]")
    assert_one_line_error(result, "unknown task 'no_such_task'", "record_run")
    assert redis_conn.keys("rq:job:*") == []


def test_non_json_and_wrong_arguments_are_refused(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    assert_one_line_error(run_cli("--config", config, "enqueue", "record_run", "--args", "{shard: 1"), "not valid JSON")
    assert_one_line_error(run_cli("--config", config, "enqueue", "record_run", "--args", '"one"'), "JSON list")
    result = run_cli("--config", config, "enqueue", "record_run", "--args", '{"shard": 1, "colour": "red"}')
    assert_one_line_error(result, "task record_run: bad arguments", "colour")
    assert_one_line_error(run_cli("--config", config, "enqueue", "record_run", "--args", "[]"), "shard")
    assert redis_conn.keys("rq:job:*") == []


def test_enqueue_by_name_then_status_json(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    result = run_cli("--config", config, "enqueue", "record_run", "--args", '{"shard": 2}', "--count", "3")
    assert result.returncode == 0, result.stderr
    assert len(Queue("heavy", connection=redis_conn)) == 3
    status = run_cli("--config", config, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["queues"]["heavy"]["ready"] == 3
    assert report["queues"]["heavy"]["oldest_ready_age_s"] >= 0
    assert set(report["queues"]["archive"]) == {"ready", "deferred", "running", "failed", "oldest_ready_age_s", "held"}
    assert report["queues"]["archive"]["held"] == []
    assert set(report["resources"]) == {"shard:1", "shard:2"}


def test_probe_shows_values_thresholds_and_errors(redis_conn: Redis, write_config) -> None:
    result = run_cli("--config", str(write_config(shard2_hosts='["db1", "dead"]')), "probe", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    db1 = report["resources"]["shard:2"]["hosts"]["db1"]
    assert db1["error"] is None and db1["role"] == "host"
    assert 0 <= db1["signals"]["connections"]["value"] < 1
    assert db1["signals"]["connections"]["high"] == 0.95 and db1["signals"]["connections"]["low"] == 0.9
    assert db1["signals"]["connections"]["state"] == "ok"
    assert report["resources"]["shard:2"]["hosts"]["dead"]["error"].endswith("unreachable")
    assert report["resources"]["shard:1"]["verdict"] == "admit"
    assert report["resources"]["shard:2"]["verdict"] == "defer"
    assert report["resources"]["shard:2"]["reasons"][0].startswith("probe_error:dead")


def test_unreachable_redis_is_one_line(write_config) -> None:
    config = str(write_config(redis_url="redis://:hunter2@127.0.0.1:1/0"))
    for args in (["status"], ["enqueue", "record_run", "--args", '{"shard": 1}'], ["worker", "heavy", "--burst"]):
        result = run_cli("--config", config, *args)
        assert_one_line_error(result, "cannot reach Redis at redis://:***@127.0.0.1:1/0", code=1)  # rq's code
        assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.unit
def test_bad_options_exit_2(write_config) -> None:
    result = run_cli("--config", str(write_config()), "enqueue", "record_run", "--count", "zero")
    assert_one_line_error(result, "--count", "easeoff enqueue --help")
    assert_one_line_error(run_cli("frobnicate"), "No such command")
    assert_one_line_error(run_cli("worker"), "QUEUES")


@pytest.mark.unit
def test_every_command_loads_by_name_and_a_worker_loads_only_its_own() -> None:
    """Commands are imported when wanted: `easeoff worker` starts without the exporter, the page
    or `top`, and every name `--help` lists resolves to the command of that name."""
    code = (
        "import sys, click\n"
        "from easeoff.workers.cli import COMMANDS, cli\n"
        "ctx = click.Context(cli)\n"
        "cli.get_command(ctx, 'worker')\n"
        "print(sorted(m for m in sys.modules if m.startswith('easeoff.workers.cli.')))\n"
        "print(all(cli.get_command(ctx, n).name == n for n in COMMANDS))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    loaded, named = result.stdout.splitlines()
    assert loaded == "['easeoff.workers.cli.helpers', 'easeoff.workers.cli.jobs']", result.stderr
    assert named == "True"
    listed = run_cli("--help")
    assert listed.returncode == 0, listed.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in listed.stdout, name
