"""What does waiting for a replica's acknowledgement of each job move cost (`[redis] replica_acks = 1`)?

A Redis primary, a replica and three Sentinels on loopback (scripts/sentinels.py, started here
and stopped at the end). Side by side, alternating, through the same Sentinel URL: an app
enqueues a batch of no-op jobs (per-enqueue latency), then four gated burst workers drain it
(jobs/s, from the first worker's start to the last one's exit). Every write of every client
waits for the replica with acks on; on loopback the replica answers in well under a
millisecond, so this is the floor of the cost: across machines add one network round trip
per write.

Last line: `replica_acks_throughput_ratio X`: drain jobs/s with acks on / off (median of rounds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import Procs, median, tail, unwind_on_signals
from failover import CONFIG as FAILOVER_CONFIG
from fleet import load_script

from easeoff.feedback.config import load_config
from easeoff.feedback.connect import connect
from easeoff.tasks.catalog import noop

WORKERS = 4
# failover.py's config, with every write waiting for the replica or not.
CONFIG = FAILOVER_CONFIG.replace('url = "{url}"\n', 'url = "{url}"\nreplica_acks = {acks}\n')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_round(scratch: Path, url: str, acks: int, jobs: int) -> tuple[float, float, float]:
    """(enqueue p50 µs, enqueue p99 µs, drain jobs/s) for one batch."""
    config_path = scratch / f"acks{acks}.toml"
    config_path.write_text(CONFIG.format(url=url, acks=acks, interval=1.0), encoding="utf-8")
    redis = connect(load_config(config_path))
    redis.flushdb()
    latencies = []
    for _ in range(jobs):
        began = time.perf_counter()
        noop.enqueue(shard=1, connection=redis)
        latencies.append(1e6 * (time.perf_counter() - began))
    procs = Procs(scratch)
    try:
        began = time.monotonic()
        workers = [procs.gated(config_path, ["heavy"], burst=True) for _ in range(WORKERS)]
        for proc in workers:
            if procs.wait(proc, timeout=600) != 0:
                raise SystemExit(f"replica_acks: a worker failed: {tail(proc)}")
        drained = time.monotonic() - began
    finally:
        procs.stop_all()
    left = redis.llen("rq:queue:heavy")
    if left:
        raise SystemExit(f"replica_acks: {left} jobs left in the queue after the burst workers exited")
    return percentile(latencies, 0.5), percentile(latencies, 0.99), jobs / drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    unwind_on_signals()
    results: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
    with tempfile.TemporaryDirectory(prefix="easeoff-bench-acks-") as tmp:
        scratch = Path(tmp)
        with load_script("sentinels").RedisSentinels(scratch / "redis") as sentinels:
            for _ in range(opts.rounds):
                for acks in (0, 1):
                    results[acks].append(one_round(scratch, sentinels.url(db=0), acks, opts.jobs))
    for acks, rows in results.items():
        p50, p99, rate = (median([row[i] for row in rows]) for i in range(3))
        print(
            f"replica_acks={acks}: enqueue p50 {p50:.0f} us, p99 {p99:.0f} us; "
            f"{WORKERS} workers drain {rate:.0f} jobs/s (rounds: {', '.join(f'{r[2]:.0f}' for r in rows)})"
        )
    ratio = median([r[2] for r in results[1]]) / median([r[2] for r in results[0]])
    print(f"replica_acks_throughput_ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
