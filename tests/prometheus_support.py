"""A real Prometheus server on loopback, started from Debian's package for one test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.sandbox_support import load_script

free_port = load_script("sentinels").free_port  # a port below the ephemeral range
server = load_script("prometheus_server")


@contextmanager
def prometheus_server(
    workdir: Path, scrape_targets: list[str] | None = None, rules: Path | None = None
) -> Iterator[str]:
    """Yield the base URL of a fresh Prometheus; scrape and evaluate every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run the README's test command, which installs it")
    port = free_port()
    config = workdir / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s"]
    if rules is not None:
        lines += ["rule_files:", f"  - {rules}"]
    if scrape_targets:
        lines += [
            "scrape_configs:",
            "  - job_name: easeoff",
            "    static_configs:",
            f"      - targets: {scrape_targets}",
        ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc, url = server.start(binary, config, workdir, port)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-500:]}")
            return bool(server.ready(url))

        wait_until(ready, timeout=30, interval=0.1, what="prometheus to be ready")
        yield url
    finally:
        server.stop(proc)
