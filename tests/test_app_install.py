"""An app of its own runs its heavy jobs on an installed easeoff, outside this repository.

The wheel is built and installed into a fresh virtualenv in a temporary directory; the app
there has its own `tasks.py` and its own `feedback/` package (names easeoff's rooms once
took at the top of site-packages), and its config is the README's, thresholds set for
this machine. Everything runs from the app's folder, as a user would run it: its jobs through
strain, rq's job model from its own tasks (`options(depends_on=, retry=)`, `enqueue_in`) and a
schedule of its config run by `easeoff scheduler`. The wheel itself is read too: its license
metadata, and no demo module in its file list.
"""

from __future__ import annotations

import ast
import email.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from tests.conftest import MYSQL, REPO, TEST_REDIS_URL, ConnectionHolder, max_connections, mysql_status, wait_until

pytestmark = pytest.mark.slow

APP_DB = "easeoff_app_test"
BUILD_LITTER = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis")

APP_TASKS = '''
"""The app's own heavy tasks, beside its entry point (the Celery and rq convention)."""
import pymysql

from easeoff import heavy_task
from feedback import tag_for  # the app's own `feedback` package, not easeoff's


@heavy_task(queue="recount", resources=lambda shard, **_: [f"shard:{shard}"])
def bump_recount(shard: int, user: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="APP_DB")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO recounts (shard, user, tag) VALUES (%s, %s, %s)", (shard, user, tag_for(user)))
    conn.commit()
    conn.close()


@heavy_task(queue="recount", resources=lambda shard, **_: [f"shard:{shard}"])
def flaky_recount(shard: int, user: int) -> None:
    """Its first run fails, as a flaky upstream would; rq's Retry runs it again."""
    conn = pymysql.connect(host="127.0.0.1", user="root", database="APP_DB", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO attempts (user) VALUES (%s)", (user,))
        cur.execute("SELECT COUNT(*) FROM attempts WHERE user = %s", (user,))
        if cur.fetchone()[0] == 1:
            conn.close()
            raise RuntimeError(f"flaky_recount {user}: the first run fails")
        cur.execute("INSERT INTO recounts (shard, user, tag) VALUES (%s, %s, %s)", (shard, user, tag_for(user)))
    conn.close()
'''.replace("APP_DB", APP_DB)

# The app's own enqueue: rq's job model through options(), and a delayed job.
APP_ENQUEUE = """
import json
import time
from datetime import timedelta

from rq import Retry

from tasks import bump_recount, flaky_recount

parent = flaky_recount.options(retry=Retry(max=2, interval=1)).delay(shard=1, user=30)
child = bump_recount.options(depends_on=parent).delay(shard=1, user=31)
at = time.time()
later = bump_recount.enqueue_in(timedelta(seconds=3), shard=1, user=32)
print(json.dumps({"parent": parent.id, "child": child.id, "later": later.id, "at": at}))
"""

# The app's periodic job, in its own config.
APP_SCHEDULE = """
[schedules.app-recount]
task = "bump_recount"
kwargs = { shard = 1, user = 99 }
every = "2s"
"""

APP_FEEDBACK = '''
"""The app's user-feedback feature: a package that happens to share a name with one of easeoff's rooms."""


def tag_for(user: int) -> str:
    return f"app-feedback-{user}"
'''


def readme_config() -> str:
    """The TOML block of the README's "Use it in your app" section, as a newcomer would copy it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it in your app", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "the README's app section has no TOML config"
    return match.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """easeoff's wheel, built as a user would build it, outside the repository."""
    root = tmp_path_factory.mktemp("app-wheel")
    # Built from a copy: setuptools leaves build/ behind, and a stale build/lib in the checkout
    # would put modules since deleted into the next wheel.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*BUILD_LITTER))
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = list(dist.glob("easeoff-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def app_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the repository with easeoff's wheel installed: its bin/ folder."""
    root = tmp_path_factory.mktemp("app-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv / "bin"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "myapp"
    (app / "feedback").mkdir(parents=True)
    (app / "tasks.py").write_text(APP_TASKS, encoding="utf-8")
    (app / "feedback" / "__init__.py").write_text(APP_FEEDBACK, encoding="utf-8")
    return app


@pytest.fixture
def app_db() -> Iterator[None]:
    conn = pymysql.connect(**MYSQL, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {APP_DB}")
        cur.execute(f"CREATE DATABASE {APP_DB}")
        cur.execute(
            f"CREATE TABLE {APP_DB}.recounts (seq INT AUTO_INCREMENT PRIMARY KEY, shard INT, user INT,"
            " tag VARCHAR(64), at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.execute(f"CREATE TABLE {APP_DB}.attempts (user INT)")
    yield
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {APP_DB}")
    conn.close()


def recounts() -> list[tuple[int, int, str]]:
    conn = pymysql.connect(**MYSQL, database=APP_DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT shard, user, tag FROM recounts ORDER BY user")
            return [tuple(row) for row in cur.fetchall()]
    finally:
        conn.close()


def rows_by_user() -> dict[int, list[tuple[int, float]]]:
    """Each user's recount rows: (insert order, unix time), oldest first."""
    conn = pymysql.connect(**MYSQL, database=APP_DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT user, seq, UNIX_TIMESTAMP(at) FROM recounts ORDER BY seq")
            found: dict[int, list[tuple[int, float]]] = {}
            for user, seq, at in cur.fetchall():
                found.setdefault(int(user), []).append((int(seq), float(at)))
            return found
    finally:
        conn.close()


def attempts(user: int) -> int:
    conn = pymysql.connect(**MYSQL, database=APP_DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM attempts WHERE user = %s", (user,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def start(app: Path, *args: str, log_name: str) -> subprocess.Popen[bytes]:
    """A long-running `easeoff` process of the app, in its own session, its output in `log_name`."""
    with open(app / log_name, "wb") as log:
        return subprocess.Popen(
            list(args), cwd=app, env=app_environ(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def app_environ() -> dict[str, str]:
    """A user's shell: none of the test run's easeoff or Python settings; the tests' Redis DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EASEOFF_", "PYTHON", "VIRTUAL_ENV"))}
    env["EASEOFF_REDIS_URL"] = TEST_REDIS_URL  # the README's config, on the tests' Redis DB
    return env


def app_run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=app, env=app_environ(), capture_output=True, text=True, timeout=60)


def demo_modules() -> set[str]:
    """The demo's modules as setup.py leaves them out of the wheel (its DEMO_MODULES), as wheel paths."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    assigned = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "DEMO_MODULES" for t in node.targets)
    )
    assert isinstance(assigned, ast.Call) and assigned.args, "DEMO_MODULES is frozenset({...})"
    pairs = ast.literal_eval(assigned.args[0])
    return {f"{package.replace('.', '/')}/{module}.py" for package, module in pairs}


def test_the_wheel_carries_its_license_and_no_demo(wheel: Path) -> None:
    """PEP 639 metadata (an SPDX expression and the license file itself), and none of the demo's
    modules: the wheel's own file list, not what an install happened to leave behind."""
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.HeaderParser().parsestr(whl.read(metadata_name).decode())
        license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        license_text = whl.read(license_name).decode()
    assert metadata["License-Expression"] == "MIT" and metadata.get_all("License-File") == ["LICENSE"], metadata
    assert not [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]  # PEP 639: not both
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 easeoff maintainers" in license_text
    shipped = {n for n in names if n.endswith(".py")}
    demo = demo_modules()
    assert {"easeoff/tasks/catalog.py", "easeoff/tasks/demo_schema.py", "easeoff/tasks/shards.py"} <= demo
    assert not shipped & demo, sorted(shipped & demo)
    assert not [n for n in names if not n.startswith(("easeoff/", "easeoff-"))], names  # one namespace
    assert "easeoff/tasks/registry.py" in names and "easeoff/tasks/options.py" in names


def test_installed_wheel_is_one_namespace(app_env: Path, app_dir: Path) -> None:
    site = app_run(app_dir, str(app_env / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    top = {p.name for p in Path(site.stdout.strip()).iterdir()}
    assert "easeoff" in top
    assert not top & {"tasks", "feedback", "workers", "easeoff.example.toml"}, top
    # The demo's jobs, schema and shard map stay in the repository: the wheel leaves them out.
    shipped = {p.name for p in (Path(site.stdout.strip()) / "easeoff" / "tasks").iterdir()}
    assert "registry.py" in shipped and not shipped & {
        "catalog.py",
        "catalog_spans.py",
        "demo_schema.py",
        "shards.py",
    }, shipped
    # Outside any checkout, with no config anywhere: nothing runs on the packaged example unasked;
    # the error names where easeoff looked and the example's path, which runs when given.
    easeoff = str(app_env / "easeoff")
    missing = app_run(app_dir, easeoff, "worker", "recount", "--burst")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert f"{app_dir / 'easeoff.toml'}: no such file" in missing.stderr, missing.stderr
    example = missing.stderr.strip().rsplit(": ", 1)[1].rstrip(")")
    assert example.endswith("easeoff.example.toml") and "site-packages" in example, missing.stderr
    check = app_run(app_dir, easeoff, "--config", example, "config", "check")
    assert check.returncode == 0 and "easeoff.example.toml: ok" in check.stdout, check.stderr
    version = app_run(app_dir, easeoff, "--version")
    assert version.returncode == 0 and version.stdout.startswith("easeoff "), version.stderr


def test_an_app_runs_its_own_task_through_strain(
    redis_conn: Redis, app_env: Path, app_dir: Path, app_db: None, connections: ConnectionHolder
) -> None:
    maximum, baseline = max_connections(), int(mysql_status("Threads_connected"))
    config = readme_config()
    config = re.sub(r"high = 0\.80", f"high = {(baseline + 30) / maximum:.4f}", config)
    config = re.sub(r"low = 0\.60", f"low = {(baseline + 15) / maximum:.4f}", config)
    (app_dir / "easeoff.toml").write_text(config, encoding="utf-8")
    easeoff = str(app_env / "easeoff")

    check = app_run(app_dir, easeoff, "config", "check")
    assert check.returncode == 0, check.stderr
    assert "2 tasks" in check.stdout, check.stdout

    by_python = app_run(
        app_dir,
        str(app_env / "python"),
        "-c",
        "from tasks import bump_recount; print(bump_recount.delay(shard=1, user=7).id)",
    )
    assert by_python.returncode == 0, by_python.stderr
    by_cli = app_run(app_dir, easeoff, "enqueue", "bump_recount", "--args", '{"shard": 1, "user": 8}')
    assert by_cli.returncode == 0, by_cli.stderr
    job_ids = [by_python.stdout.strip(), by_cli.stdout.split()[1]]

    connections.hold(40)  # above high: shard:1's only host is strained
    log = open(app_dir / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    worker = subprocess.Popen(
        [easeoff, "worker", "recount"],
        cwd=app_dir,
        env=app_environ(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        scheduled = ScheduledJobRegistry("recount", connection=redis_conn)
        wait_until(lambda: scheduled.count == 2, 30, what="both app jobs deferred under strain")
        for job_id in job_ids:
            info = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).meta["easeoff"]
            assert info["task"] == "bump_recount" and info["resources"] == ["shard:1"]
            assert any(r.startswith("connections:db1 ") for r in info["last_reasons"]), info
        assert recounts() == []
        status = app_run(app_dir, easeoff, "status")
        assert status.returncode == 0, status.stderr
        assert re.search(r"shard:1\s+defer\s+connections:db1", status.stdout), status.stdout

        connections.hold(0)
        finished = FinishedJobRegistry("recount", connection=redis_conn)
        wait_until(lambda: finished.count == 2, 30, what="the app's jobs to run once the strain cleared")
        assert recounts() == [(1, 7, "app-feedback-7"), (1, 8, "app-feedback-8")]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=5)
    assert "Traceback" not in (app_dir / "worker.log").read_text(errors="replace")


def test_an_app_uses_rqs_job_model_and_a_schedule_from_its_own_tasks(
    redis_conn: Redis, app_env: Path, app_dir: Path, app_db: None
) -> None:
    """From the app's own tasks on the installed wheel: a dependent runs after its parent, which
    fails once and is retried by rq's `Retry` (counted: `easeoff job`), a job enqueued in 3 s runs
    no sooner, and a `[schedules.NAME]` of the app's config is enqueued by `easeoff scheduler` and run."""
    (app_dir / "easeoff.toml").write_text(readme_config() + APP_SCHEDULE, encoding="utf-8")
    (app_dir / "enqueue_jobs.py").write_text(APP_ENQUEUE, encoding="utf-8")
    easeoff = str(app_env / "easeoff")
    check = app_run(app_dir, easeoff, "config", "check")
    assert check.returncode == 0 and "2 tasks, 1 schedules" in check.stdout, (check.stdout, check.stderr)

    queue = Queue("recount", connection=redis_conn)
    scheduler = start(app_dir, easeoff, "scheduler", log_name="scheduler.log")
    worker = None
    try:
        # No worker yet: the schedule's job in the queue is the scheduler's.
        wait_until(
            lambda: [j for j in queue.get_job_ids() if j.startswith("schedule-app-recount-")],
            15,
            what="the scheduler to enqueue the app's schedule",
        )
        enqueued = app_run(app_dir, str(app_env / "python"), "enqueue_jobs.py")
        assert enqueued.returncode == 0, enqueued.stderr
        ids = json.loads(enqueued.stdout)
        worker = start(app_dir, easeoff, "worker", "recount", log_name="worker.log")
        finished = FinishedJobRegistry("recount", connection=redis_conn)
        wanted = {ids["parent"], ids["child"], ids["later"]}
        wait_until(lambda: wanted <= set(finished.get_job_ids()), 40, what="the app's jobs run")
        wait_until(lambda: 99 in rows_by_user(), 10, what="the scheduled job's row")
    finally:
        for proc in (scheduler, worker):
            if proc is not None:
                stop(proc)

    rows = rows_by_user()
    assert attempts(30) == 2 and len(rows[30]) == 1  # failed once, retried once, recounted once
    assert rows[31][0][0] > rows[30][0][0]  # the dependent ran after its parent's retry succeeded
    assert rows[32][0][1] >= ids["at"] + 2.0  # rq schedules at whole seconds: due no sooner than 2 s on
    told = app_run(app_dir, easeoff, "job", ids["parent"], "--json")
    assert told.returncode == 0, told.stderr
    retries = json.loads(told.stdout)["retries"]
    assert (retries["rq_used"], retries["rq_left"], retries["rq_max"]) == (1, 1, 2), retries
    scheduler_log = (app_dir / "scheduler.log").read_text(errors="replace")
    assert "schedule app-recount: enqueued schedule-app-recount-" in scheduler_log, scheduler_log
    assert "Traceback" not in scheduler_log
    worker_log = (app_dir / "worker.log").read_text(errors="replace")
    # One traceback: rq's log of the failure its Retry then retried.
    assert worker_log.count("Traceback") == 1 and "RuntimeError: flaky_recount 30: the first run fails" in worker_log


def test_config_init_writes_a_config_that_checks(app_env: Path, app_dir: Path) -> None:
    easeoff = str(app_env / "easeoff")
    wrote = app_run(app_dir, easeoff, "config", "init")
    assert wrote.returncode == 0, wrote.stderr
    assert (app_dir / "easeoff.toml").read_text().startswith("# easeoff configuration")
    check = app_run(app_dir, easeoff, "config", "check")
    assert check.returncode == 0 and check.stdout.startswith("easeoff.toml: ok"), (check.stdout, check.stderr)
    again = app_run(app_dir, easeoff, "config", "init")
    assert (
        again.returncode == 2 and again.stderr.strip() == "easeoff: error: easeoff.toml exists; --force to overwrite it"
    )
