"""The unit tier's guard (tests/conftest.py): a test marked `unit` cannot reach a server, in its
own process or in a Python process it starts, even when the code under test swallows the error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pymysql
import pytest

from tests.conftest import REPO
from tests.offline.sitecustomize import LOG_ENV

pytestmark = pytest.mark.unit


def test_a_connect_in_the_test_is_refused_and_noted(unit_tests_connect_to_nothing: list[str]) -> None:
    seen = unit_tests_connect_to_nothing
    with pytest.raises(ConnectionRefusedError, match="a unit test may not connect"):
        socket.create_connection(("127.0.0.1", 6379), timeout=1)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=1, ssl_disabled=True)
    with socket.socket(socket.AF_UNIX) as unix, pytest.raises(ConnectionRefusedError):
        unix.connect("/run/mysqld/mysqld.sock")  # MariaDB's socket: a unix connect is refused as well
    assert seen[0] == "AF_INET ('127.0.0.1', 6379)"
    assert seen[1] == "AF_INET ('127.0.0.1', 3306)"  # pymysql's own connect, to the real MariaDB
    assert seen[-1] == "AF_UNIX '/run/mysqld/mysqld.sock'"
    seen.clear()  # caught here on purpose: the teardown would fail the test otherwise


def test_a_python_subprocess_is_refused_too(tmp_path: Path) -> None:
    log = tmp_path / "refused.log"
    code = "import socket; socket.create_connection(('127.0.0.1', 3306), timeout=1)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, LOG_ENV: str(log)},  # its own log, so this test's teardown stays clean
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "a unit test may not connect: AF_INET ('127.0.0.1', 3306)" in done.stderr
    assert "('127.0.0.1', 3306)" in log.read_text(encoding="utf-8")
