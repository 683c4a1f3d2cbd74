"""`easeoff exporter` as a real subprocess for a test, and reading what it serves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Exposition text → {(sample name, labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class ExporterProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str  # http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> Samples:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return parse_samples(response.read().decode())

    def stop(self) -> int:
        """SIGTERM, as a service manager would; SIGKILL the group if it does not stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return int(self.proc.returncode)


@contextmanager
def exporter_process(config: Path, log_dir: Path, *extra: str) -> Iterator[ExporterProcess]:
    """Start `easeoff exporter --port 0` and yield it once it says where it listens."""
    log = log_dir / f"exporter-{len(list(log_dir.glob('exporter-*.log')))}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "easeoff.workers.cli", "--config", str(config), "exporter", "--port", "0", *extra],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = ExporterProcess(proc, log, "")
    try:

        def listening() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited {proc.returncode}: {running.output()}")
            found = re.search(r"serving (http://[\d.:]+)/metrics", running.output())
            return found[1] if found else None

        running.url = str(wait_until(listening, timeout=20, what="the exporter to listen"))
        yield running
    finally:
        running.stop()
