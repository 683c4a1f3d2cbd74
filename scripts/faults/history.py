"""What a run reads back at its end: rq's registries, failure reasons, and the MariaDB ledgers.

Shared by scripts/chaos.py (its reckoning) and scripts/nemesis.py (the history its checker judges).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from easeoff.tasks.shards import connect
from faults import checker


def failure_text(redis: Redis, job_id: str) -> str:
    """Why a job failed: rq's failure result, else the reason easeoff's scripts stored on the job."""
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    result = job.latest_result()
    if result is not None and result.exc_string:
        return result.exc_string.strip()
    raw = redis.hget(job.key, "exc_info") or b""
    try:
        return zlib.decompress(raw).decode(errors="replace").strip()
    except zlib.error:
        return raw.decode(errors="replace").strip()


def reason_kind(text: str) -> str:
    """`easeoff: abandoned: ...` → `easeoff: abandoned`; a traceback → its exception's name."""
    last = text.splitlines()[-1] if text else "?"
    if last.startswith("easeoff:"):
        return ":".join(last.split(":", 2)[:2])
    return last.split(":", 1)[0].rsplit(".", 1)[-1]


def places(redis: Redis, queue: str) -> dict[str, frozenset[str]]:
    """Job id → every one of rq's queue and registries of `queue` that holds it now."""
    found: dict[str, set[str]] = {}
    registries = {
        "queued": Queue(queue, connection=redis).get_job_ids(),
        "scheduled": ScheduledJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
        "started": StartedJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
        "deferred": DeferredJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
        "finished": FinishedJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
        "failed": FailedJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
        "canceled": CanceledJobRegistry(queue, connection=redis).get_job_ids(cleanup=False),
    }
    for place, ids in registries.items():
        for job_id in ids:
            found.setdefault(job_id, set()).add(place)
    return {job_id: frozenset(where) for job_id, where in found.items()}


def ledger_runs(shards: Iterable[int]) -> dict[str, int]:
    """Per job id, the executions its ledger saw: job_runs rows (record_run) or job_ledger.runs (record_once)."""
    runs: Counter[str] = Counter()
    for shard in shards:
        conn = connect(shard)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT job_id, COUNT(*) FROM job_runs GROUP BY job_id")
                runs.update({job_id: int(n) for job_id, n in cur.fetchall()})
                cur.execute("SELECT job_id, runs FROM job_ledger")
                runs.update({job_id: int(n) for job_id, n in cur.fetchall()})
        finally:
            conn.close()
    return dict(runs)


def chunk_applications(shards: Iterable[int], task: str = "ledger_in_chunks") -> Counter[tuple[str, str]]:
    """Per (job id, chunk tag) of a resumable ledger task, how many times its row was committed."""
    applied: Counter[tuple[str, str]] = Counter()
    for shard in shards:
        conn = connect(shard)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT job_id, tag, COUNT(*) FROM job_runs WHERE task = %s GROUP BY 1, 2", (task,))
                applied.update({(job_id, tag): int(n) for job_id, tag, n in cur.fetchall()})
        finally:
            conn.close()
    return applied


def span_events(shards: Iterable[int]) -> list[checker.Event]:
    """Every execution's start and end the span tasks wrote (tasks/catalog_spans.py, `task_spans`)."""
    events = []
    for shard in shards:
        conn = connect(shard)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT job_id, event, at, pid, execution FROM task_spans")
                events += [checker.Event(j, e, float(at), int(pid), ex) for j, e, at, pid, ex in cur.fetchall()]
        finally:
            conn.close()
    return events
