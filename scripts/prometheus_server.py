"""A real Prometheus server on loopback, for the tests and the benchmarks: Debian's binary, in a
session of its own on a free port, stopped with its whole process group however its user ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request
from pathlib import Path


def start(binary: str, config: Path, workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus on `config` and `port` (scripts/sentinels.free_port: below the ephemeral range),
    its data and log in `workdir`; (the process, its base URL)."""
    with open(workdir / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its process group, then SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
