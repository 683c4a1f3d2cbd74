"""How fast do workers react to strain, at the default probe interval (1 s) or `--interval`?

For two kinds of real strain — MySQL connections held open on the local MariaDB, and
replica lag on a sandbox master-master pair (its replica's SQL thread stopped) — a
fleet of 4 gated workers drains a steady stream of short jobs while the strain is
switched on and off. Measured per trial, from job start times recorded by rq:

- onset: from the moment strain begins to the last job that still starts;
- clearing: from the moment strain ends to the first job that starts again.

Lag "begins" when the true lag crosses `high` (SQL thread stopped + high seconds) and
"ends" when the SQL thread is started again (the replica catches up in milliseconds).

Last line: `reaction_intervals X`, the worse of the two medians over all strain kinds,
divided by the probe interval. Target <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis

REPO = Path(__file__).resolve().parents[2]

from fleet import (  # noqa: E402
    Fleet,
    HeldConnections,
    connection_thresholds,
    load_sandbox,
    sandbox_shard_config,
    unwind_on_signals,
)
from rq.job import Job  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from easeoff.tasks.catalog import record_run  # noqa: E402
from easeoff.tasks.demo_schema import create_schema  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/8"
INTERVAL = 1.0
WORKERS, TRIALS, LAG_HIGH = 4, 3, 2.0
JOB_SECONDS = 0.05


def connections_config(high: float, low: float) -> str:
    return f"""
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{REDIS_URL}"
[probe]
interval = {INTERVAL}
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[signals.connections]
high = {high}
low = {low}
[queues.heavy]
"""


def lag_config(topology) -> str:  # type: ignore[no-untyped-def]
    return (
        sandbox_shard_config(topology, REDIS_URL, INTERVAL)
        + f"""
[signals.lag]
high = {LAG_HIGH}
low = 1.0
[queues.heavy]
"""
    )


def start_times(redis: Redis, job_ids: list[str]) -> list[float]:
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer)
    times = []
    for job in jobs:
        if job is not None and job.started_at is not None:
            times.append(job.started_at.timestamp())
    return sorted(times)


def trial(
    redis: Redis,
    config: Path,
    env: dict[str, str],
    strain_on: Callable[[], float],
    strain_off: Callable[[], float],
) -> tuple[float, float]:
    """One on/off cycle with a fresh fleet; returns (onset, clearing) reaction in seconds."""
    redis.flushdb()
    job_ids = [
        record_run.enqueue(shard=1, tag="reaction", seconds=JOB_SECONDS, connection=redis).id for _ in range(3000)
    ]
    fleet = Fleet()
    fleet.start_gated(config, ["heavy"], WORKERS, env)
    try:
        time.sleep(3.0)  # running healthily
        onset_at = strain_on()
        time.sleep(6.0)
        clear_at = strain_off()
        time.sleep(5.0)
    finally:
        fleet.stop()
    starts = start_times(redis, job_ids)
    during = [t for t in starts if onset_at <= t < clear_at]
    after = [t for t in starts if t >= clear_at]
    onset = (max(during) - onset_at) if during else 0.0
    clearing = (min(after) - clear_at) if after else float("inf")
    return onset, clearing


def main() -> None:
    global INTERVAL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=INTERVAL, help="probe interval, seconds (default 1)")
    INTERVAL = parser.parse_args().interval
    unwind_on_signals()
    redis = Redis.from_url(REDIS_URL)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Connections on the local MariaDB.
        create_schema(1, reset=True)
        high, low, _ = connection_thresholds()
        config = Path(tmp) / "connections.toml"
        config.write_text(connections_config(high, low))
        env = {k: v for k, v in os.environ.items() if k != "EASEOFF_SHARD_URLS"}
        held = HeldConnections()

        results["connections"] = [
            trial(redis, config, env, lambda: held.hold(40), lambda: held.hold(0)) for _ in range(TRIALS)
        ]

        # 2. Replica lag on a sandbox pair.
        sandbox_mod = load_sandbox()
        box = sandbox_mod.Sandbox(Path(tmp) / "sb", base_port=sandbox_mod.free_base_port(3800))
        try:
            topology = box.up(shards=[1], replicas=1)
            url = topology.shard_urls()["1"]
            create_schema(1, url=url, reset=True)
            box.wait_synced(timeout=30)
            config = Path(tmp) / "lag.toml"
            config.write_text(lag_config(topology))
            env = {**os.environ, "EASEOFF_SHARD_URLS": json.dumps(topology.shard_urls())}

            def stop_sql() -> float:
                box.stop_sql("s1r1")
                return time.time() + LAG_HIGH  # true lag crosses high this much later

            def start_sql() -> float:
                box.start_sql("s1r1")
                return time.time()

            results["lag"] = [trial(redis, config, env, stop_sql, start_sql) for _ in range(TRIALS)]
        finally:
            box.down()
            redis.flushdb()

    worst = 0.0
    for kind, runs in results.items():
        onset = statistics.median(r[0] for r in runs)
        clearing = statistics.median(r[1] for r in runs)
        worst = max(worst, onset, clearing)
        trials = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in runs)
        print(f"{kind:<12} onset->last start {onset:.2f}s, clearing->first start {clearing:.2f}s (trials: {trials})")
    print(f"probe interval {INTERVAL:g}s")
    print(f"reaction_intervals {worst / INTERVAL:.2f}")


if __name__ == "__main__":
    main()
