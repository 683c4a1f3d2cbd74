"""Periodic heavy jobs, enqueued once per tick however many workers look.

Every worker that does the fleet's duties (workers/prober_duties.py), and any `easeoff
scheduler`, runs `Scheduler.run` each round. For each schedule whose latest tick
(feedback/schedules.py) is newer than the last one this process saw, it does one optimistic
transaction on the schedule's hash (keys.schedule_key):

    WATCH easeoff:schedule:NAME;  HGET last_tick
    if last_tick >= tick: someone enqueued it (UNWATCH, done)
    MULTI;  HSET last_tick=tick ...;  the task's job, as HeavyTask.stage puts it;  EXEC

The claim of the tick and the job are one MULTI/EXEC, so there is no moment between them: a
scheduler killed (or cut off) before EXEC leaves neither, and the next round anywhere finds
the tick unclaimed and enqueues it; one killed after EXEC left both. Two schedulers at the same
tick both WATCH; the first EXEC changes the hash and the second's EXEC is refused (WatchError)
with nothing written. `last_tick` only grows, so a scheduler whose clock runs behind never
enqueues a tick older than one already enqueued. The job goes through the task's own enqueue
path: its easeoff meta (resources, caps, weight), the config's resource check, JSON.

Ticks missed while nobody ran (the whole fleet down over a nightly tick) are run once, not
once each: the first round after finds last_tick several ticks behind, enqueues one job for
the latest tick, and records how many it coalesced (`last_missed`, `missed`, a warning). A
schedule never seen before starts at its next tick: a deploy at noon does not run the nightly
job at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from redis import Redis
from redis.exceptions import WatchError

from easeoff.feedback.config import Config
from easeoff.feedback.keys import WAKE, schedule_key
from easeoff.feedback.schedules import Schedule, due_tick, next_tick, ticks_between
from easeoff.tasks.periodic import declared_schedules
from easeoff.tasks.registry import TaskError, get_task
from easeoff.workers.logs import job_extra


class Fired(msgspec.Struct, frozen=True):
    """One tick this process claimed: the job it enqueued, or why it could not."""

    schedule: str
    tick: int  # ms
    job_id: str | None
    missed: int  # ticks before it coalesced into this one
    error: str | None = None


class ScheduleState(msgspec.Struct, frozen=True):
    """What `easeoff schedules` shows of one schedule."""

    name: str
    task: str
    when: str
    origin: str
    next_run: float  # Unix seconds
    last_tick: float | None  # Unix seconds of the last tick claimed (or the tick it started after)
    last_job: str | None
    last_at: float | None  # when that job was enqueued (the fleet's clock)
    last_missed: int
    runs: int
    missed: int
    since: float | None
    last_error: str | None


def all_schedules(config: Config) -> dict[str, Schedule]:
    """Those the loaded task modules declare, and the config's; the config's win a shared name."""
    return {**declared_schedules(), **config.schedules}


def check_schedules(config: Config) -> None:
    """Each schedule's task exists and takes its arguments, and its resources are the config's:
    one TaskError line at start (`easeoff worker`, `config check`), not a failure at 2 am."""
    for schedule in all_schedules(config).values():
        try:
            task = get_task(schedule.task)
            task.check_known(task.job_meta(schedule.args, schedule.kwargs).resources, config.resources)
        except TaskError as exc:
            raise TaskError(f"schedule {schedule.name}: {exc}") from None


def tick_text(tick: int) -> str:
    """A tick (ms) as people read it: `2026-12-08 01:00:00Z`."""
    return datetime.fromtimestamp(tick / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def job_id_for(schedule: str, tick: int) -> str:
    """`schedule-nightly-1767232800000`: which tick a job ran for, at a glance (and for checkers)."""
    return f"schedule-{schedule}-{tick}"


class Scheduler:
    """One process's look at the schedules. It remembers the latest tick it has seen claimed
    (by itself or another), so a round between ticks sends Redis nothing."""

    def __init__(
        self, redis: Redis, config: Config, log: logging.Logger | None = None, seen: dict[str, int] | None = None
    ) -> None:
        """`seen`: schedule -> the next tick (ms) after the last one seen claimed, kept by the
        caller across rounds (DutyMemory): before it, a schedule costs no Redis and no cron parsing."""
        self.redis = redis
        self.config = config
        self.log = log or logging.getLogger(__name__)
        self.schedules = all_schedules(config)
        self.known_resources = frozenset(config.resources)
        self._wait_until: dict[str, int] = {} if seen is None else seen

    def run(self, now: float) -> list[Fired]:
        """Claim and enqueue every schedule's due tick not yet enqueued; `now` is the fleet's clock."""
        fired = []
        now_ms = math.floor(now * 1000)
        for schedule in self.schedules.values():
            if now_ms < self._wait_until.get(schedule.name, -1):
                continue
            tick = due_tick(schedule, now)
            claimed = fire(self.redis, schedule, tick, now, self.known_resources)
            self._wait_until[schedule.name] = next_tick(schedule, tick / 1000)  # claimed here, or found claimed
            if claimed is None:
                continue
            fired.append(claimed)
            if claimed.error is not None:
                self.log.error(
                    "schedule %s: tick at %s not enqueued: %s", schedule.name, tick_text(claimed.tick), claimed.error
                )
            elif claimed.missed:
                self.log.warning(
                    "schedule %s: enqueued %s for its tick at %s, once for the %d tick(s) missed before it",
                    *(schedule.name, claimed.job_id, tick_text(claimed.tick), claimed.missed),
                    extra=_enqueued(schedule, claimed),
                )
            else:
                self.log.info(
                    "schedule %s: enqueued %s", schedule.name, claimed.job_id, extra=_enqueued(schedule, claimed)
                )
        if any(f.job_id for f in fired):
            self.redis.publish(WAKE, "jobs")  # idle workers sleep until told (feedback/wake.py)
        return fired


def _enqueued(schedule: Schedule, fired: Fired) -> dict[str, str]:
    """`extra=` for the record of a schedule's job (workers/logs.py)."""
    try:
        queue = get_task(schedule.task).queue
    except TaskError:
        queue = "?"
    return job_extra(fired.job_id or "", queue, schedule.task, event="enqueued")


def fire(
    redis: Redis, schedule: Schedule, tick: int, now: float, known_resources: frozenset[str] | None = None
) -> Fired | None:
    """Enqueue `schedule`'s job for `tick` unless it (or a later tick) was: one WATCH/MULTI/EXEC.
    None: nothing to do (claimed already, lost the race, or the schedule's first sighting)."""
    key = schedule_key(schedule.name)
    now_ms = math.floor(now * 1000)
    with redis.pipeline() as pipe:
        try:
            pipe.watch(key)
            last = pipe.hget(key, "last_tick")
            if last is None:  # first sighting: start after this tick (see the module's policy)
                pipe.multi()
                pipe.hsetnx(key, "last_tick", tick)
                pipe.hsetnx(key, "since", now_ms)
                pipe.execute()
                return None
            last_tick = int(last)
            if last_tick >= tick:
                return None
            missed = ticks_between(schedule, last_tick, tick)
            job_id: str | None = job_id_for(schedule.name, tick)
            pipe.multi()
            error = None
            try:
                get_task(schedule.task).stage(
                    pipe, redis, schedule.args, schedule.kwargs, known_resources=known_resources, job_id=job_id
                )
            except TaskError as exc:  # checked at start; a task module changed under a running worker
                error, job_id = str(exc), None
            fields: Mapping[str, str | int] = {
                "last_tick": tick,
                "last_at": now_ms,
                "last_missed": missed,
                "last_job": job_id or "",
                "last_error": error or "",
            }
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping type is narrow
            pipe.hincrby(key, "runs" if error is None else "errors", 1)
            pipe.hincrby(key, "missed", missed)
            pipe.execute()
        except WatchError:  # another scheduler changed the hash first: it claimed the tick
            return None
    return Fired(schedule.name, tick, job_id, missed, error)


def schedule_states(redis: Redis, config: Config, now: float) -> list[ScheduleState]:
    """Every schedule with its next run and what its last did, by name."""
    schedules = all_schedules(config)
    with redis.pipeline(transaction=False) as pipe:
        for name in sorted(schedules):
            pipe.hgetall(schedule_key(name))
        stored = pipe.execute()
    states = []
    for name, raw in zip(sorted(schedules), stored, strict=True):
        schedule = schedules[name]
        h = {
            k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in raw.items()
        }
        states.append(
            ScheduleState(
                name=name,
                task=schedule.task,
                when=schedule.when,
                origin=schedule.origin,
                next_run=_next_run(schedule, h.get("last_tick"), now),
                last_tick=_seconds(h.get("last_tick")),
                last_job=h.get("last_job") or None,
                last_at=_seconds(h.get("last_at")),
                last_missed=int(h.get("last_missed") or 0),
                runs=int(h.get("runs") or 0),
                missed=int(h.get("missed") or 0),
                since=_seconds(h.get("since")),
                last_error=h.get("last_error") or None,
            )
        )
    return states


def _next_run(schedule: Schedule, last_tick: str | None, now: float) -> float:
    """The next tick; or the due one, if no scheduler has claimed it yet (the fleet is down, or
    every worker busy): it runs at the next round anywhere."""
    due = due_tick(schedule, now)
    if last_tick is not None and int(last_tick) < due:
        return due / 1000
    return next_tick(schedule, now) / 1000


def _seconds(ms: str | None) -> float | None:
    return None if not ms else int(ms) / 1000
