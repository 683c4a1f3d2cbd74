"""Does a scrape cost more when the queue is deep? Exporter scrape time with 1,000 and with
1,000,000 queued jobs, side by side in one run.

Redis DB 12 (flushed at start and at end) holds two queues: `small` with 1,000 job ids and
`big` with 1,000,000, filled with pipelined RPUSH of ids, with a job hash only for the head
job — the exporter reads a queue's depth with LLEN and its age from the head job, nothing
per job, and this proves it. Two real `easeoff exporter` processes, one configured with each
queue (neither queue is in rq's queue set, so each exporter sees only its own), serve
/metrics on loopback; the script GETs them alternately over HTTP, as Prometheus would, in
several rounds, and reports each round's medians and their ratio.

Last line: `scrape_ratio X` — median scrape time at 1M over at 1k, median over rounds.
Target <= 1.5 (O(1) in depth; the machine is shared and noisy, hence the side-by-side).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

REPO = Path(__file__).resolve().parents[2]

from rq.utils import now as rq_now  # noqa: E402
from rq.utils import utcformat  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
REDIS_URL = "redis://127.0.0.1:6379/12"
SIZES = {"small": 1_000, "big": 1_000_000}
CHUNK = 10_000

CONFIG = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis_url}"

[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"

[resources."shard:1"]
hosts = ["db1"]

[signals.connections]
high = 0.95
low = 0.90

[queues.{queue}]
resources = ["shard:1"]
[queues.{queue}.watermarks.depth]
high = 500000
low = 10
for = 60
"""


def fill(redis: Redis, queue: str, jobs: int) -> float:
    """`jobs` ids on rq's list for `queue`, a job hash for the head only; returns seconds taken."""
    started = time.perf_counter()
    key = f"rq:queue:{queue}"
    redis.delete(key)
    with redis.pipeline(transaction=False) as pipe:
        for first in range(0, jobs, CHUNK):
            pipe.rpush(key, *(f"{queue}-{i}" for i in range(first, min(first + CHUNK, jobs))))
        pipe.hset(f"rq:job:{queue}-0", mapping={"enqueued_at": utcformat(rq_now()), "status": "queued"})
        pipe.execute()
    assert redis.llen(key) == jobs
    return time.perf_counter() - started


@contextlib.contextmanager
def exporter(config: Path, log: Path) -> Iterator[str]:
    """A real `easeoff exporter --port 0`; yields its /metrics URL, and always ends it."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "easeoff.workers.cli", "--config", str(config), "exporter", "--port", "0"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"serving (http://[\d.:]+/metrics)", log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"scrape: exporter did not start: {log.read_text(errors='replace')[-800:]}")
            time.sleep(0.05)
        yield found[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return time.perf_counter() - started, body


def ready_jobs(body: bytes, queue: str) -> float | None:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "easeoff_queue_ready_jobs" and sample.labels.get("queue") == queue:
                return sample.value
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of alternating scrapes")
    parser.add_argument("--scrapes", type=int, default=100, help="scrapes of each exporter per round")
    args = parser.parse_args()

    redis = Redis.from_url(REDIS_URL)
    redis.flushdb()
    try:
        for queue, jobs in SIZES.items():
            print(f"filled {queue}: {jobs:,} job ids in {fill(redis, queue, jobs):.2f}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="easeoff-bench-scrape-") as tmp:
            scratch = Path(tmp)
            urls = {}
            with contextlib.ExitStack() as stack:
                for queue in SIZES:
                    config = scratch / f"{queue}.toml"
                    config.write_text(CONFIG.format(redis_url=REDIS_URL, queue=queue), encoding="utf-8")
                    urls[queue] = stack.enter_context(exporter(config, scratch / f"{queue}.log"))
                for queue, url in urls.items():
                    if ready_jobs(scrape(url)[1], queue) != SIZES[queue]:
                        raise SystemExit(f"scrape: the {queue} exporter does not report {SIZES[queue]:,} jobs")
                    for _ in range(10):  # warm up both: imports, connections, first readings
                        scrape(url)
                ratios = []
                print(f"{'round':>5} {'1k median ms':>13} {'1M median ms':>13} {'ratio':>7}")
                for number in range(1, args.rounds + 1):
                    times: dict[str, list[float]] = {queue: [] for queue in SIZES}
                    for i in range(args.scrapes):
                        order = list(SIZES) if i % 2 == 0 else list(reversed(SIZES))
                        for queue in order:
                            times[queue].append(scrape(urls[queue])[0])
                    small, big = statistics.median(times["small"]), statistics.median(times["big"])
                    ratios.append(big / small)
                    print(f"{number:>5} {small * 1000:>13.2f} {big * 1000:>13.2f} {big / small:>7.3f}", flush=True)
        rounded = [round(r, 3) for r in ratios]
        print(f"scrapes per exporter: {args.rounds * args.scrapes}, alternating; ratios per round {rounded}")
        print(f"scrape_ratio {statistics.median(ratios):.3f}")
    finally:
        redis.flushdb()
        redis.close()


if __name__ == "__main__":
    main()
