"""A real Prometheus for a benchmark: scrapes one target every second, in a scratch folder,
always stopped (its process group ended) when the `with` block ends, however it ends.

Not a benchmark itself (the leading underscore keeps it out of `scripts/bench/*.py` runs).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from fleet import load_script

SCRAPE_INTERVAL = 1.0  # seconds


@contextlib.contextmanager
def prometheus(workdir: Path, target: str) -> Iterator[str]:
    """Yield the base URL of a fresh Prometheus scraping `target` (host:port) every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed: run the README's test command once, which installs it")
    server = load_script("prometheus_server")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL:g}s\nscrape_configs:\n  - job_name: live\n"
        f"    static_configs:\n      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    proc, url = server.start(binary, config, workdir, load_script("sentinels").free_port())
    try:
        deadline = time.monotonic() + 60
        while not server.ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-400:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.stop(proc)
