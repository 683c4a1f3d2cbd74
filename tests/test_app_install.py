"""An app of its own runs its heavy jobs on an installed easeoff, outside this repository.

The wheel is built and installed into a fresh virtualenv in a temporary directory; the app
there has its own `tasks.py` and its own `feedback/` package (names easeoff's rooms once
took at the top of site-packages), and its config is the README's, thresholds set for
this machine. Everything runs from the app's folder, as a user would run it.
"""

from __future__ import annotations

import email.parser
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
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from tests.conftest import MYSQL, REPO, TEST_REDIS_URL, ConnectionHolder, max_connections, mysql_status, wait_until

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
'''.replace("APP_DB", APP_DB)

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
        cur.execute(f"CREATE TABLE {APP_DB}.recounts (shard INT, user INT, tag VARCHAR(64))")
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


def app_environ() -> dict[str, str]:
    """A user's shell: none of the test run's easeoff or Python settings; the tests' Redis DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EASEOFF_", "PYTHON", "VIRTUAL_ENV"))}
    env["EASEOFF_REDIS_URL"] = TEST_REDIS_URL  # the README's config, on the tests' Redis DB
    return env


def app_run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=app, env=app_environ(), capture_output=True, text=True, timeout=60)


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
    modules = {Path(n).stem for n in names if n.endswith(".py")}
    assert not modules & {"catalog", "demo_schema", "shards"}, sorted(modules)
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
    assert "1 tasks" in check.stdout, check.stdout

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
