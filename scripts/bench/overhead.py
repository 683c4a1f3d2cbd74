"""What does the gate cost? No-op jobs through plain rq's forking Worker and through
easeoff's GatedWorker, side by side in one run.

Both: the same N `easeoff.tasks.catalog.noop` jobs (enqueued with `noop.enqueue(shard=1)`, JSON
serializer), one burst worker in a subprocess forking a work horse per job, the job's
module preloaded in the worker's main process (rq's own advice; without it every plain
rq horse re-imports pymysql, which the GatedWorker parent already has, and plain rq
looks ~10 ms/job slower than it is — `--no-preload` measures that variant). The gate is
healthy: real probes of the local MariaDB every second, thresholds it passes easily.

Timed from the worker's spawn to the moment the last job ended (its `ended_at`), so
interpreter start, config, the first probe and the queue drain all count. Rounds
alternate plain/easeoff (and which goes first), and the median of the per-round ratios
is the result; the steady-state rate (first job started → last ended) is shown too.

Last line: `throughput_ratio X` (easeoff jobs/s over plain rq jobs/s). Target >= 0.95.
`--simple` measures the non-forking workers instead, rq's SimpleWorker beside
`easeoff worker --in-process`: last line `throughput_simple_ratio X`, target >= 0.95.
`--profile` adds one cProfile'd GatedWorker run and prints where its main process spends time.
"""

from __future__ import annotations

import argparse
import itertools
import pstats
import sys
import time
from pathlib import Path

from _common import PRELOAD, PYTHON, Procs, bench_env, enqueue_noops, median, tail
from redis import Redis
from rq.utils import utcparse

QUEUE = "heavy"

PROFILED_GATED = (
    "import cProfile, runpy, sys\n"
    "{preload}"
    "out = sys.argv.pop(1)\n"
    "sys.argv[0] = 'easeoff'\n"
    "profile = cProfile.Profile()\n"
    "profile.enable()\n"
    "try:\n"
    "    runpy.run_module('easeoff.workers.cli', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "finally:\n"
    "    profile.disable()\n"
    "    profile.dump_stats(out)\n"
)


def job_times(redis: Redis, jobs: int) -> tuple[float, float, float]:
    """(first started_at, last ended_at, median gap between successive starts) over the
    finished no-op jobs, as unix times and seconds."""
    ids = [i.decode() for i in redis.zrange(f"rq:finished:{QUEUE}", 0, -1)]
    failed = redis.zcard(f"rq:failed:{QUEUE}")
    if len(ids) != jobs or failed:
        raise SystemExit(f"overhead: {len(ids)} of {jobs} jobs finished, {failed} failed")
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
        rows = pipe.execute()
    starts = sorted(utcparse(r[0].decode()).timestamp() for r in rows)
    ended = max(utcparse(r[1].decode()).timestamp() for r in rows)
    return starts[0], ended, median([b - a for a, b in itertools.pairwise(starts)])


def one_run(
    kind: str, redis: Redis, config: Path, procs: Procs, jobs: int, preload: bool, simple: bool = False
) -> dict[str, float]:
    redis.flushdb()
    enqueue_noops(redis, jobs)
    spawned = time.time()
    if kind == "plain":
        proc = procs.plain([QUEUE], burst=True, preload=preload, simple=simple)
    else:
        proc = procs.gated(config, [QUEUE], burst=True, preload=preload, in_process=simple)
    rc = procs.wait(proc, timeout=max(60.0, jobs * 0.5))
    exited = time.time()
    if rc != 0:
        raise SystemExit(f"overhead: {kind} worker exited {rc}: {tail(proc)}")
    first, last, gap = job_times(redis, jobs)
    return {
        "rate": jobs / (last - spawned),  # spawn → drained
        "steady": (jobs - 1) / (last - first),  # first job started → last job ended
        "startup": first - spawned,
        "wall": last - spawned,
        "exit": exited - last,
        "per_job": gap,  # typical cost of one job, robust to bursts of noise from other tenants
    }


def profile_run(redis: Redis, config: Path, procs: Procs, scratch: Path, jobs: int, preload: bool) -> None:
    redis.flushdb()
    enqueue_noops(redis, jobs)
    out = scratch / "gated.prof"
    code = PROFILED_GATED.format(preload=PRELOAD if preload else "")
    proc = procs.start([PYTHON, "-c", code, str(out), "--config", str(config), "worker", QUEUE, "--burst"], "prof")
    if procs.wait(proc, timeout=max(60.0, jobs)) != 0:
        raise SystemExit(f"overhead: profiled worker failed: {tail(proc)}")
    print(f"\n--- cProfile of the GatedWorker main process, {jobs} jobs (cumulative, top 40) ---")
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.strip_dirs().sort_stats("cumulative").print_stats(40)
    print("--- (tottime, top 25) ---")
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="no-op jobs per run (default 200)")
    parser.add_argument("--rounds", type=int, default=10, help="plain/easeoff pairs (default 10)")
    parser.add_argument("--no-preload", action="store_true", help="do not import easeoff.tasks.catalog in the parents")
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds (default 1)")
    parser.add_argument("--profile", action="store_true", help="add a cProfile'd GatedWorker run")
    parser.add_argument("--simple", action="store_true", help="non-forking workers: SimpleWorker and --in-process")
    opts = parser.parse_args()
    preload = not opts.no_preload
    began = time.monotonic()

    ratios: list[float] = []
    steady_ratios: list[float] = []
    per_job_ratios: list[float] = []
    results: dict[str, list[dict[str, float]]] = {"plain": [], "easeoff": []}
    with bench_env("overhead", interval=opts.interval) as (redis, config, scratch):
        procs = Procs(scratch)
        try:
            # Warm-up (not counted): page cache, .pyc files, MariaDB's connection path.
            one_run("easeoff", redis, config, procs, min(opts.jobs, 30), preload, opts.simple)
            one_run("plain", redis, config, procs, min(opts.jobs, 30), preload, opts.simple)
            for i in range(opts.rounds):
                order = ("plain", "easeoff") if i % 2 == 0 else ("easeoff", "plain")
                got = {kind: one_run(kind, redis, config, procs, opts.jobs, preload, opts.simple) for kind in order}
                for kind in order:
                    results[kind].append(got[kind])
                ratio = got["easeoff"]["rate"] / got["plain"]["rate"]
                steady = got["easeoff"]["steady"] / got["plain"]["steady"]
                ratios.append(ratio)
                steady_ratios.append(steady)
                per_job_ratios.append(got["plain"]["per_job"] / got["easeoff"]["per_job"])
                print(
                    f"round {i + 1} ({order[0]} first): "
                    f"plain {got['plain']['rate']:6.1f} jobs/s (steady {got['plain']['steady']:6.1f}, "
                    f"start-up {got['plain']['startup']:.2f}s)   "
                    f"easeoff {got['easeoff']['rate']:6.1f} jobs/s (steady {got['easeoff']['steady']:6.1f}, "
                    f"start-up {got['easeoff']['startup']:.2f}s)   ratio {ratio:.3f} (steady {steady:.3f})",
                    flush=True,
                )
            if opts.profile:
                profile_run(redis, config, procs, scratch, opts.jobs, preload)
        finally:
            procs.stop_all()

    for kind in ("plain", "easeoff"):
        runs = results[kind]
        print(
            f"{kind:<8} median {median([r['rate'] for r in runs]):6.1f} jobs/s spawn→drained, "
            f"{median([r['steady'] for r in runs]):6.1f} jobs/s steady, "
            f"start-up {median([r['startup'] for r in runs]):.2f}s, "
            f"typical job-to-job {1000 * median([r['per_job'] for r in runs]):.1f} ms"
        )
    print(
        f"{opts.jobs} no-op jobs per run, {opts.rounds} alternating rounds, "
        f"{'non-forking (SimpleWorker, --in-process)' if opts.simple else 'forking'} burst workers, JSON serializer, "
        f"healthy gate (probe every {opts.interval:g}s), task module {'preloaded' if preload else 'not preloaded'}; "
        f"median ratios: steady-state {median(steady_ratios):.3f}, typical job-to-job {median(per_job_ratios):.3f}; "
        f"run time {time.monotonic() - began:.0f}s"
    )
    print(f"throughput_{'simple_' if opts.simple else ''}ratio {median(ratios):.3f}")


if __name__ == "__main__":
    main()
