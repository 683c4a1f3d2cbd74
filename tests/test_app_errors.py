"""An app's mistakes get one clear line: a TaskError in Python, exit 2 from the CLI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from redis import Redis

from easeoff import TaskError, heavy_task
from easeoff.tasks.registry import HeavyTask
from tests.conftest import REPO, run_cli


def _noop(shard: int) -> None:
    pass


def declared(resources: object) -> HeavyTask:
    """A task that is never registered, so the test leaves the registry as it found it."""
    return HeavyTask(name="probe_task", func=_noop, queue="heavy", resources=resources)  # type: ignore[arg-type]


@pytest.mark.unit
def test_a_string_of_resources_is_refused_at_declaration() -> None:
    with pytest.raises(TaskError, match=r"give a list of names, like \['shard:1'\]"):
        heavy_task(queue="heavy", resources="shard:1")  # type: ignore[arg-type]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (lambda shard, **_: f"shard:{shard}", r"resources must be a list of names like \['shard:1'\], not str"),
        (lambda shard, **_: {f"shard:{shard}"}, r"resources must be a list of names .*not set"),
        (lambda shard, **_: [shard], r"resource 1 is not a non-empty string"),
        (lambda shard, **_: [""], r"resource '' is not a non-empty string"),
    ],
)
def test_resources_that_are_not_a_list_of_names_fail_at_enqueue(resources: object, message: str) -> None:
    never_used = Redis(host="127.0.0.1", port=1)  # refused before any round trip
    with pytest.raises(TaskError, match=message):
        declared(resources).enqueue(shard=1, connection=never_used)


@pytest.mark.unit
def test_a_resource_the_config_does_not_declare_is_refused_at_enqueue() -> None:
    task = declared(lambda shard, **_: [f"shard:{shard}"])
    with pytest.raises(TaskError, match=r"resource 'shard:9' is not in the config \(known: shard:1, shard:2\)"):
        task.enqueue(shard=9, connection=Redis(host="127.0.0.1", port=1), known_resources={"shard:1", "shard:2"})


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.unit
def test_two_tasks_with_one_name_in_two_modules_name_both(tmp_path: Path) -> None:
    for module in ("first", "second"):
        (tmp_path / f"{module}.py").write_text(
            "from easeoff import heavy_task\n\n@heavy_task(queue='heavy')\ndef recount() -> None: ...\n"
        )
    result = python(
        "import sys; sys.path.insert(0, '.')\n"
        "from easeoff.tasks.registry import TaskError, load_task_modules\n"
        "try:\n    load_task_modules(['first', 'second'])\nexcept TaskError as exc:\n    print(exc)\n",
        tmp_path,
    )
    assert result.stdout.strip() == "task name 'recount' is declared twice: by first.recount and second.recount"


@pytest.mark.unit
def test_a_task_declared_in_a_script_is_refused(tmp_path: Path) -> None:
    result = python("from easeoff import heavy_task\n@heavy_task(queue='heavy')\ndef job() -> None: ...\n", tmp_path)
    assert result.returncode == 1
    assert "TaskError: task job: declared in a script run as __main__" in result.stderr


@pytest.mark.unit
def test_no_bare_tasks_feedback_or_workers_module_is_loaded(tmp_path: Path) -> None:
    """From the repository root, `tasks` is importable beside `easeoff.tasks`: nothing may load it."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy\n"
            "import easeoff.workers.cli, easeoff.workers.gated_worker, easeoff.feedback.observe.exporter\n"
            "import easeoff.tasks.catalog, easeoff.feedback.observe.page, easeoff.workers.cli.top\n"
            "from easeoff import heavy_task, connect, load_config, count_request\n"
            "bare = sorted(m for m in sys.modules if m.split('.')[0] in ('tasks', 'feedback', 'workers'))\n"
            "print(bare, easeoff.tasks.catalog.noop.func_path)\n",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] easeoff.tasks.catalog.noop"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_task_module_that_cannot_be_imported_stops_the_cli(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    line = one_line_error(run_cli("--config", config, "--import", "no_such_app.tasks", "enqueue", "noop"))
    assert line.startswith("easeoff: error: cannot import task module 'no_such_app.tasks' (no module named")
    bad = write_config().with_suffix(".bad.toml")
    bad.write_text(write_config().read_text().replace('modules = ["easeoff.tasks.catalog"]', 'modules = ["nope"]'))
    line = one_line_error(run_cli("--config", str(bad), "worker", "heavy"))
    assert line.startswith("easeoff: error: cannot import task module 'nope'")
    line = one_line_error(run_cli("--config", config, "config", "check", env={"EASEOFF_TASK_MODULES": "my-app"}))
    assert line.endswith("EASEOFF_TASK_MODULES: 'my-app' is not a module name (like myapp.tasks)")


def test_demo_tasks_are_known_only_where_a_config_names_them(redis_conn: Redis, write_config) -> None:
    config = write_config()
    without = config.with_suffix(".app.toml")
    without.write_text(config.read_text().replace('modules = ["easeoff.tasks.catalog"]', "modules = []"))
    line = one_line_error(run_cli("--config", str(without), "enqueue", "noop", "--args", '{"shard": 1}'))
    assert line == "easeoff: error: unknown task 'noop' (known: none)"
    assert run_cli("--config", str(config), "enqueue", "noop", "--args", '{"shard": 1}').returncode == 0


def test_cli_bad_inputs_name_what_is_wrong(redis_conn: Redis, write_config) -> None:
    config = str(write_config())
    cases = {
        ("enqueue", "record_run", "--args", '{"shard": 9}'): "task record_run: resource 'shard:9' is not in the config",
        ("worker", "heavvy"): "unknown queue 'heavvy' (known: heavy, archive, recount",
        ("worker", "--path", "/no/such/dir", "heavy"): "--path /no/such/dir: no such directory",
        ("failed", "nope"): "unknown queue 'nope'",
        ("requeue",): "give JOB_IDs or --all QUEUE (one of the two)",
        ("requeue", "no-such-job"): "no such job 'no-such-job'",
        ("requeue", "--all", "nope"): "unknown queue 'nope'",
    }
    for args, message in cases.items():
        line = one_line_error(run_cli("--config", config, *args))
        assert line.startswith(f"easeoff: error: {message}"), (args, line)
    assert redis_conn.llen("rq:queue:heavy") == 0  # nothing was enqueued by the refused command


@pytest.mark.unit
def test_every_package_of_the_checkout_is_in_the_distribution() -> None:
    """pyproject lists the packages by hand (package-dir maps them); a folder left off is missing from the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"easeoff"} | {
        "easeoff." + ".".join(init.parent.relative_to(REPO).parts)
        for room in ("tasks", "feedback", "workers")
        for init in (REPO / room).rglob("__init__.py")
    }
    assert listed == found
