"""`easeoff` never takes an installed module from the folder it runs in.

Every command used to put the current directory first on `sys.path` and then import rich,
pymysql and prometheus_client lazily: a `rich.py` planted in the folder an operator ran
`easeoff top` from ran as them. Here modules named like easeoff's dependencies are planted in the
app's folder, each leaving a marker if imported; the commands run from that folder, as the console
script and as `python -m`, and the app's own task module there must still load (and its job run).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIG_TEMPLATE, TEST_REDIS_URL, wait_until

PLANTED = ("rich", "pymysql", "prometheus_client", "redis", "rq", "click", "msgspec")
# `python -m` itself puts the current directory first before easeoff's first line runs (Python's
# `-P` turns that off): there, only the modules easeoff imports lazily can be kept from it.
LAZY = ("rich", "pymysql", "prometheus_client")
SCRIPT, MODULE = [str(Path(sys.executable).parent / "easeoff")], [sys.executable, "-m", "easeoff.workers.cli"]
APP_TASKS = """
from pathlib import Path

from easeoff import heavy_task


@heavy_task(queue="heavy")
def app_touch(path: str) -> None:
    Path(path).write_text("ran")
"""


@pytest.fixture(params=["script", "-m"])
def launcher(request: pytest.FixtureRequest) -> list[str]:
    return SCRIPT if request.param == "script" else MODULE


@pytest.fixture
def app(tmp_path: Path, redis_conn: object, launcher: list[str]) -> Path:
    """The app's folder: its task module, its config, and the planted modules."""
    folder = tmp_path / "app"
    folder.mkdir()
    for name in PLANTED if launcher == SCRIPT else LAZY:
        (folder / f"{name}.py").write_text(f"open({str(tmp_path / f'planted-{name}')!r}, 'w').close()\n")
    (folder / "secapp_tasks.py").write_text(APP_TASKS)
    (folder / "easeoff.toml").write_text(
        CONFIG_TEMPLATE.replace('modules = ["easeoff.tasks.catalog"]', 'modules = ["secapp_tasks"]').format(
            redis_url=TEST_REDIS_URL, redis_extra="", interval=0.5, stale_after=5.0, backoff_base=0.5,
            backoff_cap=1.0, high=0.95, low=0.9, shard2_hosts='["db1"]', extra="", backoff_extra="",
        )
    )  # fmt: skip
    return folder


def planted_markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.glob("planted-*"))


def test_commands_run_from_a_folder_with_planted_modules_import_none(app: Path, launcher: list[str]) -> None:
    env = {**os.environ, "EASEOFF_CONFIG": str(app / "easeoff.toml")}

    def easeoff(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*launcher, *args], cwd=app, env=env, capture_output=True, text=True, timeout=60)

    ran = app.parent / "ran"
    for args in (
        ("status",),
        ("top", "--once"),
        ("probe",),
        ("enqueue", "app_touch", "--args", f'{{"path": "{ran}"}}'),
        ("failed",),
        ("worker", "heavy", "--burst"),
    ):
        result = easeoff(*args)
        assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"
        assert planted_markers(app) == [], f"`easeoff {' '.join(args)}` imported a planted module"
    assert ran.read_text() == "ran"  # the app's own module loaded from its folder, and its job ran

    log = app.parent / "exporter.log"
    with log.open("wb") as out:
        exporter = subprocess.Popen(
            [*launcher, "exporter", "--port", "0"], cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: re.search(r"serving http://", log.read_text()), timeout=20, what="the exporter")
    finally:
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(timeout=15)
    assert planted_markers(app) == [], "`easeoff exporter` imported a planted module"
