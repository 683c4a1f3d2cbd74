"""What the gated worker's parts share: the state a claim, a run and its beats pass between
them, each part's methods the others call, and the helpers they all use.

GatedWorker (workers/gated_worker.py) is rq's Worker put together from its parts, each a mixin
over this one: the claim loop (claim_loop.py: claim, gate, defer), fenced runs (fenced_runs.py:
rq's job moves for a job this worker claimed, each checking the claim still holds) and job
beats (job_beats.py: the running job's heartbeat, its horse, its critical checks). A method
declared here is defined in one part; the part comes first in the worker's MRO.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.connection import AbstractConnection
from rq import Queue
from rq.executions import Execution
from rq.job import Job

from easeoff.feedback import liveness
from easeoff.feedback.config import Config
from easeoff.feedback.levers.limits import Leases, LeaseScope
from easeoff.feedback.reasons import Verdict
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.demand import Wants
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.tasks.meta import JobMeta, task_name
from easeoff.workers import logs
from easeoff.workers.checks import Check
from easeoff.workers.fencing import Fence, arm
from easeoff.workers.horse_connection import HorseConnections
from easeoff.workers.job_endings import CountsJobEndings
from easeoff.workers.moves import Claim, JobMoves
from easeoff.workers.redis_outages import RidesOutRedisOutages

ABANDON_GRACE = int(liveness.GRACE)  # seconds a running job's heartbeat may be late before it counts as abandoned


class WorkerParts(CountsJobEndings, RidesOutRedisOutages):
    config: Config
    readings: ReadingsCache
    leases: Leases
    moves: JobMoves
    rng: random.Random
    checks: list[Check]
    wants: Wants  # a running job keeps its hosts probed at full pace
    _lease: tuple[list[LeaseScope], str] | None  # the slots the admitted job holds
    _running_job: Job | None
    _claimed: Claim | None  # the admitted claim, until its run takes its execution
    _claimed_any: bool
    _fence: Fence | None  # the running job's claim: every later move of it checks this
    _fenced_out: str | None  # the job whose fence fell: its end is not recorded
    _pending_claim: str | None  # a claim whose reply Redis did not deliver: sent again as is
    _reach_mark: int  # tasks/db_reach.py, taken as each job's run begins
    _held: dict[str, str]  # queue -> why it is held, to log holds and releases once
    _kept: tuple[Snapshot, float, int] | None  # the last snapshot read, when, after how many wakes
    _horse_connection: AbstractConnection | None  # opened for the horse about to be forked
    _horse_connections: HorseConnections  # the next horses', opened ahead
    _busy_note: Pipeline | None  # the BUSY state and started count, sent once the run begins
    _hold_lock: threading.Lock  # a stop-job command and the gate's decision, one at a time
    _held_job_id: str | None  # claimed by this worker and not yet deferred or ended

    # -- the claim loop's (claim_loop.py)
    def _defer(
        self,
        job: Job,
        meta: JobMeta,
        queue: Queue,
        execution: Execution,
        verdict: Verdict,
        fence: Fence | None,
        ran: bool = False,
    ) -> None:
        raise NotImplementedError

    # -- fenced runs' (fenced_runs.py)
    def _note_fenced_out(self, fence: Fence) -> None:
        raise NotImplementedError

    def _record_busy(self) -> None:
        raise NotImplementedError

    # -- job beats' (job_beats.py)
    def _beat(self, job: Job) -> bool:
        raise NotImplementedError

    def stop_fenced_job(self) -> None:
        raise NotImplementedError

    # -- stop requests' (stop_requests.py)
    def _let_go(self, job_id: str) -> None:
        raise NotImplementedError

    def _stop_noted(self, job_id: str) -> bool:
        raise NotImplementedError

    # -- the worker's own housekeeping (gated_worker.py)
    def _heartbeat_if_due(self) -> None:
        raise NotImplementedError

    def _promote(self) -> None:
        raise NotImplementedError

    def _enqueue_periodic(self, now: float) -> None:
        raise NotImplementedError

    def _any_ready(self, queues: list[Queue]) -> bool:
        raise NotImplementedError

    def _drained(self) -> bool:
        raise NotImplementedError


def task_or_none(job: Job) -> str | None:
    try:
        return task_name(job)
    except Exception:  # a payload that cannot be read: the record still names the job
        return None


def about(job: Job, reason: str | None = None, event: logs.Event | None = None) -> dict[str, str]:
    """`extra=` for a record about `job` (workers/logs.py): its id, queue and task as fields."""
    return logs.job_extra(job.id, job.origin, task_or_none(job), reason, event)


def meta_of(job: Job, config: Config | None = None) -> JobMeta:
    """The job's meta: its own; for an easeoff task's job pushed through plain rq (no easeoff meta),
    the one its task works out from the job's arguments, kept on the job; a plain function's job is
    named by its function, as counters name it. Raises `UngatableJob` (with its one-line `reason`)
    for a task's job whose meta cannot be worked out: the claim fails it with that reason. With the
    `config`, a derived resource the config lacks is such a case too (tasks/derived_meta.py)."""
    from easeoff.tasks.derived_meta import adopt_meta

    return adopt_meta(job, None if config is None else config.resources)


class FencedClient:
    """The worker's Redis client as rq's job moves see it while a fenced job runs: the same in
    everything but `pipeline()`, whose transactions check the job's fence (workers/fencing.py)."""

    def __init__(self, client: Redis, fence: Fence) -> None:
        self._client = client
        self._fence = fence

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        return arm(self._client.pipeline(transaction=transaction, shard_hint=shard_hint), self._fence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def raw_client(client: Any) -> Redis:
    """The Redis client under a fenced view (which changes only how pipelines are made)."""
    inner = client._client if isinstance(client, FencedClient) else client
    assert isinstance(inner, Redis)
    return inner
