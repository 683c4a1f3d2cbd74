"""rq's job options for a heavy task's job, kept apart from the task's own arguments.

    bump_recount.options(depends_on=parent, retry=Retry(max=3, interval=[10, 60])).delay(shard=1, user=42)

`options()` takes only job options and `.delay()` / `.enqueue()` / `.enqueue_in()` / `.enqueue_at()`
only the task's arguments, so neither shadows the other: rq reserves names in `Queue.enqueue`
(a function taking `timeout` or `description` cannot be given them there), and Celery splits
them likewise (`apply_async(args, kwargs, countdown=...)`).

Every option rq 3.0's `Queue.enqueue` takes is honoured here or refused with one line
(`REFUSED`). Through the gate each keeps rq's meaning: a deferral is no run, so it spends no
retry and calls no callback; a dependent is enqueued when its parent finishes, however often
the parent was deferred or parked first; a scheduled job is promoted when due and then gated
like any other; a job's `ttl` counts from its enqueue, deferrals or not (a job that has started —
a retry, a checkpoint — waits anew, as rq's own retry does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Dependency, Job, JobStatus
from rq.serializers import JSONSerializer

from easeoff.feedback.keys import WAKE
from easeoff.tasks.arguments import describe_arguments
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.tasks.registry import TaskError

if TYPE_CHECKING:
    from easeoff.tasks.registry import HeavyTask

# rq 3.0's enqueue options easeoff does not carry (yet), and why: one line each.
REFUSED = {
    "repeat": "rq's Repeat is not carried through easeoff; declare a schedule for periodic heavy jobs",
    "rate_limit": "rq's RateLimit would hold slots the gate never sees; use heavy_task(concurrency=..., rate=...)",
    "webhooks": "rq's webhooks are not carried through easeoff yet",
    "pipeline": "a caller's pipeline is not supported: easeoff enqueues in its own transaction",
    "group_id": "rq's groups are not supported through easeoff yet",
    "args": "give the task's arguments to .delay(...) itself",
    "kwargs": "give the task's arguments to .delay(...) itself",
}
CALLBACKS = ("on_success", "on_failure", "on_stopped")


@dataclass(frozen=True)
class JobOptions:
    """One job's options, checked: rq's meaning unless the field says otherwise."""

    depends_on: Any = None  # a Job, a job id, rq's Dependency, or a list of jobs / ids
    retry: Retry | None = None  # failures to retry, and after how long; a deferral spends none
    on_success: Callback | None = None
    on_failure: Callback | None = None
    on_stopped: Callback | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    ttl: int | None = None  # seconds the job may wait to start, from its enqueue, deferred or not
    at_front: bool = False
    job_id: str | None = None
    unique: bool = False  # refuse the job if its job_id exists already
    meta: Mapping[str, Any] | None = None  # the app's own; `easeoff` is easeoff's
    description: str | None = None
    timeout: int | str | None = None  # over the task's declared timeout
    connection: Redis | None = None  # default: the config's Redis
    known_resources: Collection[str] | None = None  # with `connection`: the resources to check against


OPTION_NAMES = tuple(f.name for f in fields(JobOptions))
ALIASES = {"job_timeout": "timeout"}  # rq's Queue.enqueue spelling


def parse_options(task: str, given: Mapping[str, Any], base: JobOptions | None = None) -> JobOptions:
    """`given` over `base`, each checked; a bad or refused option raises TaskError naming it."""
    changes: dict[str, Any] = {}
    for name, value in given.items():
        key = ALIASES.get(name, name)
        if key in changes:
            raise TaskError(f"task {task}: job option {key} given twice (as {name} too)")
        if name in REFUSED:
            raise TaskError(f"task {task}: job option {name} is refused: {REFUSED[name]}")
        if key not in OPTION_NAMES:
            raise TaskError(f"task {task}: unknown job option {name!r} (known: {', '.join(OPTION_NAMES)})")
        changes[key] = _checked(task, key, value)
    return replace(base or JobOptions(), **changes)


def _checked(task: str, name: str, value: Any) -> Any:
    def bad(why: str) -> TaskError:
        return TaskError(f"task {task}: job option {name}={value!r}: {why}")

    if value is None:
        if name in ("at_front", "unique"):
            raise bad("must be True or False")
        return None
    if name == "depends_on":
        items = value if isinstance(value, list | tuple) else [value]
        if not items or not all(isinstance(v, Job | str | Dependency) and v for v in items):
            raise bad("must be a job, a job id, rq's Dependency or a list of them")
        return value
    if name == "retry":
        if not isinstance(value, Retry):
            raise bad("must be rq's Retry(max=..., interval=...)")
        return value
    if name in CALLBACKS:
        return _callback(value, bad)
    if name in ("result_ttl", "failure_ttl", "ttl"):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (value <= 0 and not (value == -1 and name != "ttl"))
        ):
            raise bad("must be a positive number of seconds" + ("" if name == "ttl" else ", or -1 for never"))
        return value
    if name in ("at_front", "unique"):
        if not isinstance(value, bool):
            raise bad("must be True or False")
        return value
    if name in ("job_id", "description"):
        if not isinstance(value, str) or not value:
            raise bad("must be a non-empty string")
        return value
    if name == "meta":
        if not isinstance(value, Mapping):
            raise bad("must be a dict")
        if META_KEY in value:
            raise bad(f"the key {META_KEY!r} is easeoff's own")
        try:
            json.dumps(dict(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise bad(f"must be JSON-serializable: {exc}") from None
        return dict(value)
    if name == "timeout":
        if isinstance(value, bool) or not isinstance(value, int | str) or value == 0:
            raise bad("must be seconds (or rq's '1h', '30m'), or -1 for none")
        return value
    if name == "connection":
        if not isinstance(value, Redis):
            raise bad("must be a redis.Redis client")
        return value
    return value  # known_resources: a collection of names


def _callback(value: Any, bad: Callable[[str], TaskError]) -> Callback:
    """rq's Callback; a function or its dotted path becomes one (rq deprecates the bare callable)."""
    if isinstance(value, Callback):
        func = value.func
    elif isinstance(value, str) or callable(value):
        func = value
    else:
        raise bad("must be rq's Callback, a function, or its dotted path")
    if not isinstance(func, str) and getattr(func, "__module__", None) == "__main__":
        raise bad("declared in a script run as __main__; move it to a module the worker can import")
    if not isinstance(func, str) and "<" in getattr(func, "__qualname__", "<"):
        raise bad("a lambda or nested function cannot be found by the worker; give a module-level function")
    try:
        return value if isinstance(value, Callback) else Callback(func)
    except ValueError as exc:
        raise bad(str(exc)) from None


def _check_together(task: str, options: JobOptions, scheduled: bool) -> None:
    """Combinations rq refuses (or, for a scheduled dependent, silently ignores)."""
    if options.unique and not options.job_id:
        raise TaskError(f"task {task}: job option unique=True needs a job_id")
    if options.unique and options.depends_on is not None:
        raise TaskError(f"task {task}: job options unique and depends_on do not go together (rq refuses them)")
    if scheduled and options.depends_on is not None:
        raise TaskError(
            f"task {task}: job option depends_on does not go with enqueue_in/enqueue_at "
            "(rq's scheduler would enqueue it without waiting for its parent)"
        )


class TaskCall:
    """A task with its job options, ready to enqueue: `task.options(...)` returns one."""

    def __init__(self, task: HeavyTask, options: JobOptions) -> None:
        self.task = task
        self.job_options = options

    def options(self, **given: Any) -> TaskCall:
        """More options over these (the later wins)."""
        return TaskCall(self.task, parse_options(self.task.name, given, self.job_options))

    def _on(self, connection: Redis | None) -> JobOptions:
        """`connection=` is taken where the task's own enqueue takes it, as well as in options()."""
        if connection is None:
            return self.job_options
        return parse_options(self.task.name, {"connection": connection}, self.job_options)

    def enqueue(self, *args: Any, connection: Redis | None = None, **kwargs: Any) -> Job:
        """One job on the task's queue now (or, with `depends_on`, when its parents have finished)."""
        return enqueue_job(self.task, self._on(connection), args, kwargs)

    def delay(self, *args: Any, connection: Redis | None = None, **kwargs: Any) -> Job:
        return self.enqueue(*args, connection=connection, **kwargs)

    def enqueue_in(self, delay: timedelta, *args: Any, connection: Redis | None = None, **kwargs: Any) -> Job:
        """Due `delay` from now; gated when due, like any job."""
        if not isinstance(delay, timedelta):
            raise TaskError(f"task {self.task.name}: enqueue_in takes a timedelta, not {type(delay).__name__}")
        return enqueue_job(self.task, self._on(connection), args, kwargs, at=datetime.now(UTC) + delay)

    def enqueue_at(self, when: datetime, *args: Any, connection: Redis | None = None, **kwargs: Any) -> Job:
        """Due at `when` (a naive datetime is local time, as rq takes it); gated when due."""
        if not isinstance(when, datetime):
            raise TaskError(f"task {self.task.name}: enqueue_at takes a datetime, not {type(when).__name__}")
        return enqueue_job(self.task, self._on(connection), args, kwargs, at=when)


def enqueue_job(
    task: HeavyTask,
    options: JobOptions,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    at: datetime | None = None,
) -> Job:
    """The task's job with these options: on its queue, in rq's deferred registry behind its
    parents, or in rq's scheduled registry until `at`. Its easeoff meta rides in `meta`."""
    meta = task.job_meta(args, kwargs)
    if options.retry is not None:  # rq keeps the retries left, not the max: `easeoff job` tells both
        meta = replace(meta, retry_max=options.retry.max)
    _check_together(task.name, options, scheduled=at is not None)
    connection, known_resources = options.connection, options.known_resources
    if connection is None:
        from easeoff.feedback.connect import default_target  # the config lives in feedback

        connection, known_resources = default_target()
    task.check_known(meta.resources, known_resources)
    queue = Queue(task.queue, connection=connection, serializer=JSONSerializer)
    job_fields = _job_fields(task, options, args, kwargs, meta)
    try:
        if at is not None:
            job = queue.create_job(status=JobStatus.SCHEDULED, **job_fields)
            if options.at_front:
                job.enqueue_at_front = True  # promotion puts it at the front (workers/lua/parking.lua)
            return queue.schedule_job(job, at, unique=options.unique)
        if options.unique or options.depends_on is not None:
            # rq's own steps: the uniqueness check in one script, the parents WATCHed until its place is decided.
            job = queue.enqueue_call(**job_fields, at_front=options.at_front, unique=options.unique)
            if job.get_status(refresh=False) == JobStatus.QUEUED:
                connection.publish(WAKE, "jobs")
            return job
        with connection.pipeline() as pipe:  # one transaction: the job, its queue entry, the queue's length
            job = queue.enqueue_call(**job_fields, at_front=options.at_front, pipeline=pipe)
            pipe.llen(queue.key)
            if pipe.execute()[-1] == 1:
                # Idle workers sleep until told (feedback/wake.py). Only the first job into an
                # empty queue says so: while a queue holds jobs, a worker that woke for the
                # first claims until it is empty again.
                connection.publish(WAKE, "jobs")
        return job
    except TaskError:
        raise
    except DuplicateJobError:
        raise TaskError(f"task {task.name}: job id {options.job_id!r} exists already (unique=True)") from None
    except ValueError as exc:  # rq's refusal of a value or combination
        raise TaskError(f"task {task.name}: {exc}") from None


def _job_fields(
    task: HeavyTask, options: JobOptions, args: Sequence[Any], kwargs: Mapping[str, Any], meta: JobMeta
) -> dict[str, Any]:
    """rq's job for the task's call with these options, its easeoff meta in `meta`."""
    return {
        "func": task.func_path,
        "args": tuple(args),
        "kwargs": dict(kwargs),
        "timeout": options.timeout if options.timeout is not None else task.timeout,
        "result_ttl": options.result_ttl,
        "ttl": options.ttl,
        "failure_ttl": options.failure_ttl,
        "description": options.description or f"{task.name}({describe_arguments(args, kwargs)})",
        "depends_on": options.depends_on,
        "job_id": options.job_id,
        "meta": {**(options.meta or {}), META_KEY: meta.to_dict()},
        "retry": options.retry,
        "on_success": options.on_success,
        "on_failure": options.on_failure,
        "on_stopped": options.on_stopped,
    }
