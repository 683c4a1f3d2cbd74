"""The control loop, measured: how fast does a shard's adaptive concurrency limit cut on a step
of strain, how much work starts after the onset, and how fast does the limit come back?

A sandboxed master-master pair with a replica (real mariadbd processes, scripts/sandbox.py)
is shard 1, with an adaptive limit (min 1, max 4, halved on strain) and a lag signal
(high 4 s, low 1 s). Four gated workers drain a deep queue of short jobs. Once the limit
stands at its max, the replica is given `MASTER_DELAY` (real lag, rising a second a second,
crossing `high` LAG_HIGH seconds later: the onset), and once the limit has been cut and held
a while, the delay is cleared (the replica catches up at once: the clearing). Per trial:

- cut: seconds from the onset to the limit's first cut (negative: before the onset);
- overshoot: jobs started after the onset;
- back: seconds from the clearing to the limit back at its max.

The same again with `predict` on the lag signal (its trend reaching high within 6 s holds).
Last line: `control_cut_intervals X`: the median cut, predict off, in probe intervals
(target <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from fleet import Fleet, load_sandbox, sandbox_shard_config, unwind_on_signals, wait_for
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.feedback.keys import limit_key
from easeoff.tasks.catalog import record_run
from easeoff.tasks.demo_schema import create_schema

REDIS_URL = "redis://127.0.0.1:6379/8"
WORKERS, MAX_LIMIT, LAG_HIGH, DELAY, JOB_SECONDS = 4, 4, 4.0, 30, 0.2


def config_text(topology, interval: float, predict: bool) -> str:  # type: ignore[no-untyped-def]
    return (
        sandbox_shard_config(topology, REDIS_URL, interval)
        + f"""
[resources."shard:1".concurrency]
min = 1
max = {MAX_LIMIT}
decrease = 0.5
[signals.lag]
high = {LAG_HIGH}
low = 1.0
{"predict = 6" if predict else ""}
[queues.heavy]
"""
    )


def limit(redis: Redis) -> int:
    raw = redis.get(limit_key("shard:1"))
    return int(raw) if raw is not None else 1


def started_after(redis: Redis, ids: list[str], since: float) -> int:
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    return sum(1 for j in jobs if j is not None and j.started_at is not None and j.started_at.timestamp() >= since)


def trial(box, redis: Redis, config: Path, env: dict[str, str], interval: float) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    redis.flushdb()
    ids = [record_run.enqueue(shard=1, tag="control", seconds=JOB_SECONDS, connection=redis).id for _ in range(4000)]
    fleet = Fleet()
    fleet.start_gated(config, ["heavy"], WORKERS, env)
    try:
        wait_for(lambda: limit(redis) == MAX_LIMIT, 60, "the limit to grow to its max")
        time.sleep(2 * interval)
        box.delay("s1r1", DELAY)
        onset = time.time() + LAG_HIGH  # the true lag crosses high this much later
        cut_at = None
        deadline = time.monotonic() + LAG_HIGH + 20 * interval + 10
        while cut_at is None and time.monotonic() < deadline:
            if limit(redis) < MAX_LIMIT:
                cut_at = time.time()
            time.sleep(0.01)
        if cut_at is None:
            raise SystemExit("control: the limit was never cut")
        time.sleep(max(onset - time.time(), 0) + 4 * interval)  # held a while past the onset
        overshoot = started_after(redis, ids, onset)
        box.delay("s1r1", 0)
        cleared = time.time()
        wait_for(lambda: limit(redis) == MAX_LIMIT, 60 + 20 * interval, "the limit to come back to its max")
        back = time.time() - cleared
    finally:
        fleet.stop()
        box.delay("s1r1", 0)
    return cut_at - onset, overshoot, back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds (default 1)")
    parser.add_argument("--trials", type=int, default=3)
    opts = parser.parse_args()
    unwind_on_signals()
    redis = Redis.from_url(REDIS_URL)
    sandbox_mod = load_sandbox()
    results: dict[str, list[tuple[float, int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        box = sandbox_mod.Sandbox(Path(tmp) / "sb", base_port=sandbox_mod.free_base_port(3900))
        try:
            topology = box.up(shards=[1], replicas=1)
            create_schema(1, url=topology.shard_urls()["1"], reset=True)
            box.wait_synced(timeout=30)
            env = {**os.environ, "EASEOFF_SHARD_URLS": json.dumps(topology.shard_urls())}
            for predict in (False, True):
                config = Path(tmp) / f"control-{predict}.toml"
                config.write_text(config_text(topology, opts.interval, predict), encoding="utf-8")
                label = "predict on" if predict else "predict off"
                results[label] = []
                for _ in range(opts.trials):
                    results[label].append(trial(box, redis, config, env, opts.interval))
                    cut, over, back = results[label][-1]
                    print(f"  {label}: cut {cut:+.2f}s, {over} jobs started after onset, back at max {back:.2f}s")
        finally:
            box.down()
            redis.flushdb()
    print(f"probe interval {opts.interval:g}s; limit {MAX_LIMIT}, halved on lag > {LAG_HIGH:g}s; {WORKERS} workers")
    print("| | onset -> cut | jobs started after onset | clear -> limit back at max |")
    print("| --- | --- | --- | --- |")
    for label, runs in results.items():
        cut = statistics.median(r[0] for r in runs)
        over = statistics.median(r[1] for r in runs)
        back = statistics.median(r[2] for r in runs)
        print(f"| {label} | {cut:+.2f} s ({cut / opts.interval:+.2f} intervals) | {over:.0f} | {back:.2f} s |")
    print(f"control_cut_intervals {statistics.median(r[0] for r in results['predict off']) / opts.interval:.2f}")


if __name__ == "__main__":
    main()
