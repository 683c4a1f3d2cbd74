"""Declaring heavy tasks: their queue, the resources they touch, and enqueueing them.

Resources may depend on the arguments (`shard:{shard}`), so they are worked out
once, at enqueue time, and travel in the job's meta: the worker gates on them
without calling task code. A job pushed through plain rq has no meta; the worker works
it out the same way, with `HeavyTask.job_meta` (tasks/derived_meta.py).

The registry holds the tasks of every module imported so far. Apps import their own
modules; the worker and the CLI import the ones the config names (`[tasks] modules`)
through `load_task_modules`, so a bad module name is an error at start, not a failed job.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.tasks.admission import refusal
from easeoff.tasks.arguments import describe_arguments, job_options_among
from easeoff.tasks.chunking import DEFAULT_CHUNK_TIME
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.tasks.retry_on import DEFAULT_RETRIES, DEFAULT_RETRY_ON, RetryOn
from easeoff.tasks.task_options import checked_options

if TYPE_CHECKING:
    from easeoff.tasks.options import TaskCall

ResourceSpec = Sequence[str] | Callable[..., Iterable[str]]


class TaskError(ValueError):
    """A task cannot be enqueued as asked; the message says why in one line."""


class UnknownTaskError(TaskError):
    pass


class UngatedRunError(TaskError):
    """An easeoff job taken by a plain rq worker, or admitted without the task's meta: it must
    not run without the gate's say on the task's resources (tasks/admission.py)."""


@dataclass(frozen=True)
class HeavyTask:
    name: str
    func: Callable[..., Any] = field(repr=False)
    queue: str
    resources: ResourceSpec = ()
    timeout: int | None = None
    idempotent: bool = False
    max_deferrals: int | None = None  # None: the config's [backoff] caps apply
    max_deferral_age: float | None = None
    concurrency: int | None = None  # at most this many running fleet-wide
    resumable: bool = False  # a generator over a cursor; see tasks/resumable.py
    rate: str | None = None  # at most so many starts in any window, fleet-wide ("120/min")
    chunk_time: float = DEFAULT_CHUNK_TIME  # seconds a resumable task's chunk aims at (tasks/chunking.py)
    weight: float = 1.0  # its share of a resource's slots beside other tasks when they are tight
    retry_on: tuple[RetryOn, ...] = DEFAULT_RETRY_ON  # errors worth another try (tasks/retry_on.py)
    retries: int = DEFAULT_RETRIES  # at most this many retries for them (workers/transient_errors.py)
    lever_options: Mapping[str, Any] = field(default_factory=dict)  # options of lever modules (feedback/levers/)

    @property
    def func_path(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job = get_current_job()
        refused = None if job is None else refusal(job, self.name)  # tasks/admission.py
        if refused is not None:
            raise UngatedRunError(refused)
        if self.resumable:
            from easeoff.tasks.resumable import run_resumable

            return run_resumable(self.func, args, kwargs, chunk_time=self.chunk_time)
        return self.func(*args, **kwargs)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Bad arguments fail at enqueue, with the task's name, never later in a worker."""
        try:
            bound_kwargs = {**kwargs, "cursor": None} if self.resumable else kwargs
            if self.resumable and "cursor" in kwargs:
                raise TypeError("cursor is kept by easeoff; do not pass it")
            inspect.signature(self.func).bind(*args, **bound_kwargs)
        except TypeError as exc:
            misplaced = job_options_among(kwargs, inspect.signature(self.func).parameters)
            if misplaced:
                raise TaskError(
                    f"task {self.name}: {misplaced} is a job option, not an argument: "
                    f"give it as {self.name}.options({misplaced}=...).delay(...)"
                ) from None
            raise TaskError(f"task {self.name}: bad arguments: {exc}") from None
        try:
            json.dumps([list(args), dict(kwargs)], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TaskError(f"task {self.name}: arguments must be JSON-serializable: {exc}") from None

    def resources_for(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
        if not callable(self.resources):
            return self._checked_resources(self.resources)
        try:
            # Resource functions get the task's arguments by name, defaults filled in, so
            # `lambda shard, **_: ...` works however the caller passed them.
            bound = inspect.signature(self.func).bind_partial(*args, **kwargs)
            bound.apply_defaults()
            returned = self.resources(**bound.arguments)
        except Exception as exc:  # the app's function: whatever it raises is a bad job, not a crash
            raise TaskError(f"task {self.name}: cannot work out its resources: {exc}") from None
        return self._checked_resources(returned)

    def _checked_resources(self, resources: object) -> tuple[str, ...]:
        """A list of names, never a bare string (which would become one resource per letter)."""
        if isinstance(resources, str | bytes) or not isinstance(resources, list | tuple):
            raise TaskError(
                f"task {self.name}: resources must be a list of names like ['shard:1'], "
                f"not {type(resources).__name__} {resources!r}"
            )
        for resource in resources:
            if not isinstance(resource, str) or not resource:
                raise TaskError(f"task {self.name}: resource {resource!r} is not a non-empty string")
        return tuple(resources)

    def enqueue(
        self,
        *args: Any,
        connection: Redis | None = None,
        known_resources: Collection[str] | None = None,
        job_id: str | None = None,
        **kwargs: Any,
    ) -> Job:
        """Put one job on the task's queue, serialized as JSON, with its resources in meta.

        Without a `connection`, the job goes to the Redis of the config (`$EASEOFF_CONFIG`,
        else `./easeoff.toml`), and its resources must be ones that config declares; with
        one, pass `known_resources` to have them checked likewise. rq's job options (`depends_on`,
        `retry`, callbacks, ...) go through `options()` (tasks/options.py).
        """
        return self.options(connection=connection, known_resources=known_resources, job_id=job_id).enqueue(
            *args, **kwargs
        )

    def options(self, **options: Any) -> TaskCall:
        """This task with rq's job options, to enqueue: `task.options(depends_on=parent,
        retry=Retry(max=3, interval=[10, 60])).delay(shard=1)`; a bad or refused option raises
        TaskError naming it (tasks/options.py)."""
        from easeoff.tasks.options import JobOptions, TaskCall, parse_options

        return TaskCall(self, parse_options(self.name, options, JobOptions()))

    def enqueue_in(
        self,
        delay: timedelta,
        *args: Any,
        connection: Redis | None = None,
        known_resources: Collection[str] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Due `delay` from now (rq's scheduled registry), then gated like any job."""
        where = self.options(connection=connection, known_resources=known_resources)
        return where.enqueue_in(delay, *args, **kwargs)

    def enqueue_at(
        self,
        when: datetime,
        *args: Any,
        connection: Redis | None = None,
        known_resources: Collection[str] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Due at `when`, then gated like any job."""
        where = self.options(connection=connection, known_resources=known_resources)
        return where.enqueue_at(when, *args, **kwargs)

    def stage(
        self,
        pipe: Pipeline,
        connection: Redis,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        known_resources: Collection[str] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Put this task's job on `pipe`, a transaction the caller executes beside its own commands
        (a schedule's claim of its tick, workers/scheduler.py): the same job, meta and checks as
        `enqueue`. `pipe` may WATCH keys first; it is in MULTI mode after. The caller announces
        the job (keys.WAKE) once it has executed `pipe`."""
        kwargs = dict(kwargs or {})
        meta = self.job_meta(args, kwargs)
        self.check_known(meta.resources, known_resources)
        queue = Queue(self.queue, connection=connection, serializer=JSONSerializer)
        return self._stage(pipe, queue, meta, args, kwargs, job_id)

    def _stage(
        self,
        pipe: Pipeline,
        queue: Queue,
        meta: JobMeta,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        job_id: str | None,
    ) -> Job:
        return queue.enqueue_call(
            func=self.func_path,
            args=tuple(args),
            kwargs=dict(kwargs),
            timeout=self.timeout,
            job_id=job_id,
            description=f"{self.name}({describe_arguments(args, kwargs)})",
            meta={META_KEY: meta.to_dict()},
            pipeline=pipe,
        )

    def delay(self, *args: Any, **kwargs: Any) -> Job:
        """`enqueue` to the config's Redis, as rq's and Celery's `.delay` habits expect."""
        return self.enqueue(*args, **kwargs)

    def job_meta(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> JobMeta:
        """The easeoff meta of this task's job with these arguments: what the gate judges it on.

        The one derivation for both ways a job comes in: `enqueue` here, and a job pushed
        through plain rq, which the worker works out from its arguments (tasks/derived_meta.py).
        Bad arguments or resources raise `TaskError`.
        """
        self.check_arguments(args, kwargs)
        return JobMeta(
            task=self.name,
            resources=self.resources_for(args, kwargs),
            idempotent=self.idempotent,
            resumable=self.resumable,
            concurrency=self.concurrency,
            rate=self.rate,
            weight=self.weight,
            max_deferrals=self.max_deferrals,
            max_deferral_age=self.max_deferral_age,
            lever_options=dict(self.lever_options),
        )

    def check_known(self, resources: Sequence[str], known_resources: Collection[str] | None) -> None:
        """Every resource one the config declares (None: not checked)."""
        if known_resources is None:
            return
        unknown = [r for r in resources if r not in known_resources]
        if unknown:
            known = ", ".join(sorted(known_resources)) or "none"
            raise TaskError(f"task {self.name}: resource {unknown[0]!r} is not in the config (known: {known})")


_TASKS: dict[str, HeavyTask] = {}


def heavy_task(
    queue: str,
    resources: ResourceSpec = (),
    name: str | None = None,
    timeout: int | None = None,
    idempotent: bool = False,
    max_deferrals: int | None = None,
    max_deferral_age: float | None = None,
    concurrency: int | None = None,
    resumable: bool = False,
    rate: str | None = None,
    chunk_time: float | str | None = None,
    weight: float = 1,
    retry_on: Iterable[RetryOn] = DEFAULT_RETRY_ON,
    retries: int = DEFAULT_RETRIES,
    **lever_options: Any,
) -> Callable[[Callable[..., Any]], HeavyTask]:
    """Declare a heavy task: `@heavy_task(queue="archive", resources=lambda shard, **_: [f"shard:{shard}"])`.

    `chunk_time` ("0.5s", "500ms", 0.5; default 0.5 s): what each chunk of a resumable task
    that asks `chunk_size()` is sized to take. `weight` (a positive number, default 1): the
    task's share of a resource's slots beside the other tasks that want them, when the
    resource's limit is smaller than their demand (weight 3 beside weight 1: three jobs to one).
    `retry_on` (MySQL error codes and exception classes; default deadlock, lock-wait timeout and a
    lost connection) and `retries` (default 3): failures retried later, when safe to run again
    (workers/transient_errors.py). Any other keyword is an option of a lever module
    (feedback/levers/), checked by its type; one no lever declares is refused."""

    if isinstance(resources, str | bytes):
        raise TaskError(f"heavy_task resources={resources!r}: give a list of names, like [{resources!r}]")
    try:
        checked = checked_options(rate, weight, retry_on, retries, chunk_time, resumable, lever_options)
    except ValueError as exc:
        raise TaskError(str(exc)) from None

    def register(func: Callable[..., Any]) -> HeavyTask:
        _check_importable(func, name)
        return _registered(
            HeavyTask(
                name=name or func.__name__,
                func=func,
                queue=queue,
                resources=resources,
                timeout=timeout,
                idempotent=idempotent,
                max_deferrals=max_deferrals,
                max_deferral_age=max_deferral_age,
                concurrency=concurrency,
                resumable=resumable,
                rate=checked.rate,
                chunk_time=checked.chunk_time,
                weight=checked.weight,
                retry_on=checked.retry_on,
                retries=checked.retries,
                lever_options=checked.lever_options,
            )
        )

    return register


def _check_importable(func: Callable[..., Any], name: str | None) -> None:
    """rq finds a job's function by its module's import name; `__main__` is a different module in
    every worker."""
    if func.__module__ == "__main__":
        raise TaskError(
            f"task {name or func.__name__}: declared in a script run as __main__; "
            "move it to a module the worker can import"
        )


def _registered(task: HeavyTask) -> HeavyTask:
    """Into the process's tasks by name; one name declared by two functions is refused."""
    known = _TASKS.get(task.name)
    if known is not None and known.func_path != task.func_path:
        raise TaskError(f"task name {task.name!r} is declared twice: by {known.func_path} and {task.func_path}")
    _TASKS[task.name] = task
    return task


def load_task_modules(modules: Iterable[str]) -> None:
    """Import the app's task modules, so their tasks are registered; one clear error if one fails."""
    for module in modules:
        try:
            importlib.import_module(module)
        except TaskError:
            raise
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            where = f" (no module named {missing!r} on the path)" if missing else ""
            raise TaskError(f"cannot import task module {module!r}{where}: {exc}") from None
        except Exception as exc:
            raise TaskError(f"task module {module!r} failed to import: {exc.__class__.__name__}: {exc}") from None


def task_for_function(func_name: str) -> HeavyTask | None:
    """The registered task a job's function path (`module.qualname`, as rq stores it) names, if any."""
    for task in _TASKS.values():
        if task.func_path == func_name:
            return task
    return None


def get_task(name: str) -> HeavyTask:
    try:
        return _TASKS[name]
    except KeyError:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise UnknownTaskError(f"unknown task {name!r} (known: {known})") from None


def all_tasks() -> dict[str, HeavyTask]:
    return dict(_TASKS)
