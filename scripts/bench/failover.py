"""What does a Sentinel failover cost the fleet? Jobs/s before, through and after the primary's
death, and seconds from its death to the first job finished after it.

A Redis primary, a replica and three Sentinels on loopback (scripts/sentinels.py: real
redis-server and redis-sentinel processes, `down-after-milliseconds` 1000, started here and
stopped at the end). Four gated workers drain a deep queue of short jobs through the Sentinel
URL; the primary is SIGKILLed mid-run; the sentinels promote the replica and the workers carry
on against it. Job ends are read from the finished registry on whichever server is primary
(`ended_at`, rq's own stamp), so what the dead primary held and the replica never got is not
counted: the jobs lost with it are reported beside the figures.

Last line: `failover_recovery_s X`: from the SIGKILL to the first job that finished after it.
Target: no more than `down-after-milliseconds` plus two probe intervals (1 s + 2 x 0.5 s).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

from _common import Procs, median, tail, unwind_on_signals
from fleet import load_script
from rq.job import Job
from rq.utils import utcparse

from easeoff.feedback.config import load_config
from easeoff.feedback.connect import REDIS_UNREACHABLE, connect
from easeoff.tasks.catalog import noop

WORKERS, JOBS, INTERVAL = 4, 5000, 0.5
DOWN_AFTER_S = load_script("sentinels").DOWN_AFTER_MS / 1000
CONFIG = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{url}"
[probe]
interval = {interval}
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[signals.connections]
high = 0.99
low = 0.98
[queues.heavy]
"""


def ended_times(redis, ids: list[str]) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    """Unix end times of the finished jobs among `ids`, and how many of `ids` no longer exist."""
    ends, missing = [], 0
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "status", "ended_at")
        rows = pipe.execute()
    for status, ended in rows:
        if status is None:
            missing += 1
        elif status == b"finished" and ended:
            ends.append(utcparse(ended.decode()).timestamp())
    return sorted(ends), missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=6.0, help="seconds of steady state before the kill")
    parser.add_argument("--after", type=float, default=10.0, help="seconds measured after the kill")
    parser.add_argument("--interval", type=float, default=INTERVAL, help="probe interval (seconds)")
    opts = parser.parse_args()
    unwind_on_signals()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="easeoff-bench-failover-") as tmp:
        scratch = Path(tmp)
        with load_script("sentinels").RedisSentinels(scratch / "redis") as sentinels:
            config_path = scratch / "failover.toml"
            config_path.write_text(CONFIG.format(url=sentinels.url(db=0), interval=opts.interval), encoding="utf-8")
            redis = connect(load_config(config_path))
            ids = [noop.enqueue(shard=1, connection=redis).id for _ in range(JOBS)]
            procs = Procs(scratch)
            workers = [procs.gated(config_path, ["heavy"], burst=False, preload=False) for _ in range(WORKERS)]
            try:
                time.sleep(opts.before)
                dead = [p for p in workers if p.poll() is not None]
                if dead:
                    raise SystemExit(f"failover: a worker exited: {tail(dead[0])}")
                old_port = sentinels.primary()[1]
                killed_at = sentinels.kill_primary()
                sentinels.wait_promoted(away_from=old_port, timeout=60)
                promoted_at = time.time()
                deadline = time.monotonic() + opts.after
                while time.monotonic() < deadline:
                    time.sleep(0.2)
                for _ in range(50):  # the reading client rides the failover too
                    try:
                        ends, missing = ended_times(redis, ids)
                        break
                    except REDIS_UNREACHABLE:
                        time.sleep(0.2)
                else:
                    raise SystemExit("failover: the promoted primary does not answer")
            finally:
                procs.stop_all()
    before = [t for t in ends if killed_at - opts.before + 1.0 <= t < killed_at]
    after = [t for t in ends if t >= killed_at]
    if not after:
        raise SystemExit("failover: no job finished after the primary died")
    recovery = after[0] - killed_at
    rate_before = len(before) / (opts.before - 1.0)
    settled = [t for t in after if t >= after[0] + 1.0]
    rate_after = len(settled) / max(settled[-1] - settled[0], 1e-9) if len(settled) > 1 else 0.0
    gaps = [b - a for a, b in itertools.pairwise(after)]
    print(
        f"{WORKERS} workers, no-op jobs, probe interval {opts.interval:g}s: {rate_before:.0f} jobs/s before the kill, "
        f"{rate_after:.0f} jobs/s after it (median gap {1000 * median(gaps or [0]):.1f} ms); sentinels promoted "
        f"the replica {promoted_at - killed_at:.2f}s after the kill (as seen by polling), and the first job "
        f"finished {after[0] - promoted_at:+.2f}s from then; target {DOWN_AFTER_S + 2 * opts.interval:.2f}s "
        f"(down-after {DOWN_AFTER_S:g}s + two intervals)"
    )
    print(
        f"jobs lost with the primary (enqueued, never replicated): {missing}; run time {time.monotonic() - began:.0f}s",
        file=sys.stdout,
    )
    print(f"failover_recovery_s {recovery:.2f}")


if __name__ == "__main__":
    main()
