"""rq's forking Worker, asking the gate before it takes a job and after.

Before: a queue whose own resources are strained is not dequeued from at all; the
worker waits for the next probe and keeps heartbeating. After: a job whose resources
are strained is deferred, atomically, to rq's scheduled registry with a growing,
jittered delay. A deferral is not a failure: it spends no retry. Whichever worker
probes for the fleet (once per interval) also publishes cool-downs, adapts
concurrency limits, releases jobs parked on resources that cleared and promotes due
deferred jobs: every such move is one atomic script, so workers may race safely.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.connection import AbstractConnection
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback import clock, keys, liveness, redis_internals, rq_internals
from easeoff.feedback.config import Config, ConfigError, load_config, packaged_example_path
from easeoff.feedback.connect import REDIS_UNREACHABLE, SOCKET_TIMEOUT
from easeoff.feedback.levers.limits import Leases, LeaseScope
from easeoff.feedback.levers.rates import RateLimiter
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.replica_acks import keep_waiting
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.demand import Wants
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.cooldown import CooldownPublisher
from easeoff.tasks import pool
from easeoff.workers import prober_duties
from easeoff.workers.checks import admission_checks
from easeoff.workers.claim_loop import ClaimLoop
from easeoff.workers.fenced_runs import FencedRuns
from easeoff.workers.fencing import Fence
from easeoff.workers.horse_connection import HorseConnections
from easeoff.workers.job_beats import JobBeats
from easeoff.workers.moves import Claim, JobMoves
from easeoff.workers.stop_requests import StopRequests
from easeoff.workers.worker_parts import (
    WorkerParts,
)

HEARTBEAT_EVERY = 30.0  # seconds between heartbeats while idle or held back (rq keeps a worker 420 s)
# How long the pub/sub listener waits on its socket between looks at whether to stop. It sends
# nothing to Redis either way; a stopping worker waits for it (redis-py 8.2's stop() joins).
PUBSUB_WAIT = 1.0


class GatedWorker(ClaimLoop, FencedRuns, JobBeats, StopRequests, WorkerParts):
    def __init__(
        self,
        queues: Sequence[str] | Sequence[Queue],
        name: str | None = None,
        *args: Any,
        config: Config | None = None,
        readings: ReadingsCache | None = None,
        **kwargs: Any,
    ) -> None:
        """rq's signature, plus the config (default: found as the CLI finds it) and, optionally, the
        readings cache its first probes already run in (`easeoff worker` starts them before it
        loads the app's task modules). rq's classmethods that rebuild workers from Redis (`all`,
        `find_by_key`) call this with queues and name only, and `prepare_for_work=False`: such a
        worker only describes one that runs elsewhere, so with no config found (`rq info` from any
        directory) it is built on the packaged example rather than refused."""
        if config is None:
            config = _describing_config() if kwargs.get("prepare_for_work") is False else load_config()
        if kwargs.get("serializer") is None:
            kwargs["serializer"] = JSONSerializer  # easeoff's jobs are JSON, never pickle
        # Heartbeats double as the critical-tier check on running jobs: once per probe interval.
        kwargs.setdefault("job_monitoring_interval", liveness.beat_every(config))
        given = kwargs.get("connection")
        socket_timeout = redis_internals.socket_timeout(given) if isinstance(given, Redis) else None
        super().__init__(queues, name, *args, **kwargs)
        connection = self.connection
        # rq sets the pool's socket timeout to its dequeue timeout + 10 s (415 s): a frozen Redis
        # would then hold every command for seven minutes while leases and claims lapse. easeoff
        # never blocks on Redis (its dequeue polls), so its own timeout stands.
        redis_internals.set_socket_timeout(connection, socket_timeout or SOCKET_TIMEOUT)
        self.config = config
        self.readings = ReadingsCache(connection, config) if readings is None else readings
        self.readings.on_refresh = self._after_refresh
        self.leases = Leases(connection, config)
        self._lease: tuple[list[LeaseScope], str] | None = None
        self._running_job: Job | None = None
        self.moves = JobMoves(connection)
        self._duty_memory = prober_duties.DutyMemory()
        self._cooldowns = CooldownPublisher(connection, config, recheck=prober_duties.RECHECK)
        self._queues_seen: tuple[float, list[str]] = (-math.inf, [])
        self.rng = random.Random()
        self.checks = admission_checks(config, connection, self.leases, self.rng, RateLimiter(connection), self.log)
        self._reach_mark = 0  # tasks/db_reach.py, taken as each job's run begins
        self.wants = Wants(connection, config)  # a running job keeps its hosts probed at full pace
        self._claimed: Claim | None = None
        self._claimed_any = False
        # Workers started together would heartbeat together every HEARTBEAT_EVERY: spread them.
        self._last_heartbeat_at = time.monotonic() - self.rng.uniform(0.5, 1.0) * HEARTBEAT_EVERY
        self._held: dict[str, str] = {}  # queue -> why it is held, to log holds and releases once
        self._kept: tuple[Snapshot, float, int] | None = None  # the last snapshot read, when, after how many wakes
        self._horse_connection: AbstractConnection | None = None  # opened for the horse about to be forked
        self._horse_connections = HorseConnections(connection)  # the next horses', opened ahead
        self._busy_note: Pipeline | None = None  # the BUSY state and started count, sent once the run begins
        self._state_in_redis: str | None = None  # the state last written on its own, if known
        self._fence: Fence | None = None  # the running job's claim: every later move of it checks this
        self._fenced_out: str | None = None  # the job whose fence fell: its end is not recorded
        self._pending_claim: str | None = None  # a claim whose reply Redis did not deliver: sent again as is
        self._hold_lock = threading.Lock()  # a stop-job command and the gate's decision, one at a time
        self._held_job_id: str | None = None  # claimed by this worker and not yet deferred or ended

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """From here this process works jobs: its writes wait for their replica (`replica_acks`)
        rather than fail, since a move made on the primary cannot be taken back. (Not in __init__:
        rq's `Worker.all()` builds workers on an app's or the CLI's client, which must fail fast.)
        Then the first probes start, and rq's start-up (registering, subscribing) runs beside them
        rather than before them, so the first claim waits less."""
        keep_waiting(self.connection)
        self.readings.warm_up()
        super().bootstrap(*args, **kwargs)

    def subscribe(self) -> None:
        """rq's command channel, and the fleet's word that a reading changed a verdict: a worker
        whose queues are all held sleeps long and wakes on that word, not on a poll per interval."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(
            **{self.pubsub_channel_name: self.handle_payload, keys.WAKE: lambda m: self.readings.wake(m["data"])}
        )
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # rq types it None
            sleep_time=PUBSUB_WAIT, daemon=True, exception_handler=rq_internals.pubsub_exception_handler(self)
        )

    def teardown(self) -> None:
        """Stop probing first: the probe leases lapse and the workers still running take them over.
        A worker stopping while Redis is away (or no replica acknowledges) still stops: its key
        lapses on its own (rq's worker TTL) and its probe leases after two intervals."""
        self.readings.close()
        self._horse_connections.close()
        closed = pool.close_all()  # the tasks' kept connections (tasks/pool.py)
        if closed:
            self.log.info("Worker %s: closed %d kept database connections", self.name, closed)
        keep_waiting(self.connection, False)
        try:
            super().teardown()  # type: ignore[no-untyped-call]  # rq's, untyped
        except REDIS_UNREACHABLE as exc:
            self.log.warning("Worker %s: could not record its stop: Redis unreachable (%s)", self.name, exc)

    def run_maintenance_tasks(self) -> None:
        """Recover abandoned jobs our way before rq's cleanup, which would fail them all."""
        try:
            self._recover_abandoned()
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # rq's, untyped
        except REDIS_UNREACHABLE as exc:
            self._wait_for_redis(exc)

    def clean_registries(self) -> None:
        """rq's maintenance, less its sweep of the started registry: that one judges absence on
        this host's clock (a worker 15 s ahead would fail the fleet's live jobs) and knows no
        fencing. Abandoned jobs are ours to sweep (`recover_abandoned`), on Redis's clock."""
        rq_internals.clean_registries_but_started(self)

    def _after_refresh(self, snapshot: Snapshot) -> None:
        """This worker just probed for the fleet: do the fleet's housekeeping (workers/prober_duties.py)."""
        queues = self._known_queues()
        prober_duties.after_refresh(
            prober_duties.fleet_round(
                self.connection,
                self.config,
                self.moves,
                snapshot,
                queues,
                self.log,
                self.name,
                clock.now(),
                self._duty_memory,
                self._cooldowns,
            )
        )

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """rq's. rq's forking run writes IDLE as it ends and the claim loop writes it again as it
        starts: a state Redis was last told on its own is not sent twice (a round trip a job less)."""
        if pipeline is None and state == self._state_in_redis == self.get_state():
            return
        self._state_in_redis = None
        super().set_state(state, pipeline)
        if pipeline is None:
            self._state_in_redis = state

    def _heartbeat_if_due(self) -> None:
        self._horse_connections.close_aged()  # an idle worker holds none for long
        if time.monotonic() - self._last_heartbeat_at >= HEARTBEAT_EVERY:
            with self.connection.pipeline() as pipe:
                self.heartbeat(pipeline=pipe)
                pipe.execute()
            self._last_heartbeat_at = time.monotonic()

    def _recover_abandoned(self) -> None:
        prober_duties.recover_abandoned_jobs(self.moves, self._known_queues(), self.log, self.name)

    def _enqueue_periodic(self, now: float) -> None:
        """Every worker looks at the schedules between jobs, not the prober alone: a prober killed
        at a tick is replaced within a loop, not a lapsed lease. Between ticks it sends Redis
        nothing; at a tick, one WATCH/MULTI/EXEC enqueues it once (workers/scheduler.py)."""
        prober_duties.fire_schedules(self.connection, self.config, self._duty_memory, self.log, now)

    def _promote(self) -> None:
        """With nothing to probe nobody refreshes readings, so nobody promotes on refresh: do it here."""
        prober_duties.promote_due_jobs(self.moves, self._known_queues())

    def _known_queues(self) -> list[Queue]:
        """Every queue rq knows of, not just this worker's: the prober promotes for the fleet."""
        seen_at, names = self._queues_seen
        if time.monotonic() - seen_at >= prober_duties.RECHECK:  # a new queue is seen within RECHECK
            names = known_queue_names(self.connection, [*self.queue_names(), *self.config.queues])
            self._queues_seen = (time.monotonic(), names)
        return [Queue(n, connection=self.connection, serializer=self.serializer) for n in names]

    def _any_ready(self, queues: list[Queue]) -> bool:
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue.key)
            return any(pipe.execute())

    def _drained(self) -> bool:
        """Burst mode ends when no job is ready and none is waiting out a deferral."""
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.llen(queue.key)
                pipe.zcard(ScheduledJobRegistry(queue.name, connection=self.connection).key)
            return not any(pipe.execute())


def _describing_config() -> Config:
    try:
        return load_config()
    except ConfigError:
        return load_config(packaged_example_path())
