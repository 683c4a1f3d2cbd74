"""Redis commands per second per worker while every resource is strained (8 workers, deep queue).

Strain is real: the script holds MariaDB connections above the `connections` high mark
for every resource. After the first pass (each job claimed and deferred once), the
deferred jobs should stay parked: the steady-state cost per worker is what we report.
For scale, the same fleet is measured idle and healthy in the same run.

Commands are counted on the server (INFO total_commands_processed), so run it on a
quiet Redis. `--interval` sets the probe interval (default 1 s).
Last line: `strained_redis_ops_per_worker_s X`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from redis import Redis

REPO = Path(__file__).resolve().parents[2]

from fleet import Fleet, HeldConnections, connection_thresholds, unwind_on_signals, wait_for  # noqa: E402
from rq.registry import ScheduledJobRegistry  # noqa: E402

from easeoff.tasks.catalog import record_run  # noqa: E402
from easeoff.tasks.demo_schema import create_schema  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/11"
WORKERS = 8
JOBS = 5000
WINDOW = 10.0


def write_config(directory: Path, high: float, low: float, interval: float) -> Path:
    path = directory / "churn.toml"
    path.write_text(
        f"""
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{REDIS_URL}"
[probe]
interval = {interval}
[backoff]
base = 1.0
cap = 30.0
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[resources."shard:2"]
hosts = ["db1"]
[signals.connections]
high = {high}
low = {low}
[queues.heavy]
""",
        encoding="utf-8",
    )
    return path


def commands(redis: Redis) -> int:
    return int(redis.info("stats")["total_commands_processed"])


def command_counts(redis: Redis) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in redis.info("commandstats").items()}


def per_worker_rate(redis: Redis, seconds: float) -> float:
    """Client commands only: Redis also counts the commands a Lua script runs inside itself."""
    before = commands(redis)
    calls_before = command_counts(redis)
    time.sleep(seconds)
    calls_after = command_counts(redis)
    after = commands(redis)
    busiest = sorted(((calls_after[k] - calls_before.get(k, 0), k) for k in calls_after), reverse=True)[:6]
    print("  busiest: " + ", ".join(f"{k.removeprefix('cmdstat_')} {n / seconds:.0f}/s" for n, k in busiest))
    return (after - before - 2) / seconds / WORKERS  # the INFO calls are ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds (default 1)")
    interval = parser.parse_args().interval
    unwind_on_signals()
    redis = Redis.from_url(REDIS_URL)
    redis.flushdb()
    for shard in (1, 2):
        create_schema(shard, reset=True)
    high, low, _ = connection_thresholds()
    held = HeldConnections()
    fleet = Fleet()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), high, low, interval)
        try:
            fleet.start_gated(config, ["heavy"], WORKERS)
            time.sleep(3.0)  # let the fleet settle before measuring
            idle = per_worker_rate(redis, WINDOW)
            print(f"healthy, idle queue:           {idle:.2f} Redis commands/s per worker")

            held.hold(40)
            wait_for(lambda: redis.exists("easeoff:cooldown:shard:1"), 15, "strain to be seen")
            for i in range(JOBS):
                record_run.enqueue(shard=1 + i % 2, tag="churn", connection=redis)
            print(f"enqueued {JOBS} jobs on strained shards 1 and 2 with {WORKERS} workers")
            scheduled = ScheduledJobRegistry("heavy", connection=redis)
            started = time.monotonic()
            wait_for(lambda: scheduled.count == JOBS, 120, "the first pass to defer every job")
            # Their first promotion finds the resources cooling and parks them until release.
            wait_for(
                lambda: redis.zcount(scheduled.key, "-inf", time.time() + 3600) == 0, 120, "every job to be parked"
            )
            print(f"first pass (each job deferred once, then parked): {time.monotonic() - started:.1f}s")
            deferrals_before = sum(int(v) for v in redis.hvals("easeoff:counters:deferred"))
            strained = per_worker_rate(redis, WINDOW)
            deferrals_after = sum(int(v) for v in redis.hvals("easeoff:counters:deferred"))
            print(f"strained, {JOBS} jobs parked:     {strained:.2f} Redis commands/s per worker")
            print(f"re-deferrals during the window: {deferrals_after - deferrals_before}")
        finally:
            held.hold(0)
            fleet.stop(graceful=True)
            redis.flushdb()
    print(f"probe interval {interval:g}s")
    print(f"strained_redis_ops_per_worker_s {strained:.2f}")


if __name__ == "__main__":
    main()
