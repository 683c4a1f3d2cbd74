"""Declaring heavy tasks: their queue, the resources they touch, and enqueueing them.

Resources may depend on the arguments (`shard:{shard}`), so they are worked out
once, at enqueue time, and travel in the job's meta: the worker gates on them
without importing or calling task code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

META_KEY = "easeoff"

ResourceSpec = Sequence[str] | Callable[..., Iterable[str]]


class TaskError(ValueError):
    """A task cannot be enqueued as asked; the message says why in one line."""


class UnknownTaskError(TaskError):
    pass


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

    @property
    def func_path(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.resumable:
            from easeoff.tasks.resumable import run_resumable

            return run_resumable(self.func, args, kwargs)
        return self.func(*args, **kwargs)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Bad arguments fail at enqueue, with the task's name, never later in a worker."""
        try:
            bound_kwargs = {**kwargs, "cursor": None} if self.resumable else kwargs
            if self.resumable and "cursor" in kwargs:
                raise TypeError("cursor is kept by easeoff; do not pass it")
            inspect.signature(self.func).bind(*args, **bound_kwargs)
        except TypeError as exc:
            raise TaskError(f"task {self.name}: bad arguments: {exc}") from None
        try:
            json.dumps([list(args), dict(kwargs)], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TaskError(f"task {self.name}: arguments must be JSON-serializable: {exc}") from None

    def resources_for(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
        if not callable(self.resources):
            return tuple(self.resources)
        try:
            # Resource functions get the task's arguments by name, defaults filled in, so
            # `lambda shard, **_: ...` works however the caller passed them.
            bound = inspect.signature(self.func).bind_partial(*args, **kwargs)
            bound.apply_defaults()
            return tuple(str(r) for r in self.resources(**bound.arguments))
        except (TypeError, KeyError, ValueError) as exc:
            raise TaskError(f"task {self.name}: cannot work out its resources: {exc}") from None

    def enqueue(self, *args: Any, connection: Redis, job_id: str | None = None, **kwargs: Any) -> Job:
        """Put one job on the task's queue, serialized as JSON, with its resources in meta."""
        self.check_arguments(args, kwargs)
        resources = self.resources_for(args, kwargs)
        queue = Queue(self.queue, connection=connection, serializer=JSONSerializer)
        return queue.enqueue_call(
            func=self.func_path,
            args=tuple(args),
            kwargs=dict(kwargs),
            timeout=self.timeout,
            job_id=job_id,
            description=f"{self.name}({describe_arguments(args, kwargs)})",
            meta={META_KEY: self.initial_meta(resources)},
        )

    def initial_meta(self, resources: Sequence[str]) -> dict[str, Any]:
        meta: dict[str, Any] = {"task": self.name, "resources": list(resources), "deferrals": 0}
        if self.max_deferrals is not None:
            meta["max_deferrals"] = self.max_deferrals
        if self.max_deferral_age is not None:
            meta["max_deferral_age"] = self.max_deferral_age
        if self.concurrency is not None:
            meta["concurrency"] = self.concurrency
        if self.resumable:
            meta["resumable"] = True
        if self.idempotent:
            meta["idempotent"] = True  # safe to run again: abandoned runs are requeued, not failed
        return meta


def describe_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    parts = [json.dumps(a) for a in args] + [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


_TASKS: dict[str, HeavyTask] = {}
_CATALOGS = ("easeoff.tasks.catalog",)


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
) -> Callable[[Callable[..., Any]], HeavyTask]:
    """Declare a heavy task: `@heavy_task(queue="archive", resources=lambda shard, **_: [f"shard:{shard}"])`."""

    def register(func: Callable[..., Any]) -> HeavyTask:
        task = HeavyTask(
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
        )
        if task.name in _TASKS and _TASKS[task.name].func_path != task.func_path:
            raise TaskError(f"task name {task.name!r} is declared twice")
        _TASKS[task.name] = task
        return task

    return register


def _load_catalogs() -> None:
    import importlib

    for module in _CATALOGS:
        importlib.import_module(module)


def get_task(name: str) -> HeavyTask:
    _load_catalogs()
    try:
        return _TASKS[name]
    except KeyError:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise UnknownTaskError(f"unknown task {name!r} (known: {known})") from None


def all_tasks() -> dict[str, HeavyTask]:
    _load_catalogs()
    return dict(_TASKS)


def job_resources(job: Job) -> tuple[str, ...]:
    """The resources a job was enqueued with; a plain rq job touches none."""
    info = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    if not isinstance(info, dict):
        return ()
    return tuple(str(r) for r in info.get("resources", ()))
