"""A job's easeoff meta, `job.meta["easeoff"]`: one typed structure every reader and writer uses.

Written at enqueue (what the gate needs: the task, its resources and caps), updated by the
worker at each deferral (counts, clocks, last reasons) and by resumable tasks at their
checkpoints (the cursor). The Lua scripts that move jobs read four fields by name: `task`,
`resources`, `idempotent`/`resumable` and `expires_at` (workers/lua/). Keys this version does
not know are kept as they were, so a newer writer's fields survive an older worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from rq.job import Job

from easeoff.feedback.rate import parse_rate
from easeoff.tasks.chunking import ChunkState

META_KEY = "easeoff"


@dataclass
class JobMeta:
    task: str = ""
    resources: tuple[str, ...] = ()
    deferrals: int = 0
    idempotent: bool = False  # safe to run again: an abandoned run is requeued, not failed
    resumable: bool = False  # a generator over a cursor (tasks/resumable.py)
    concurrency: int | None = None  # the task's own fleet-wide limit
    rate: str | None = None  # the task's own fleet-wide rate, as declared ("120/min")
    weight: float = 1.0  # the task's share of a tight limit beside other tasks (feedback/lua/share.lua)
    max_deferrals: int | None = None  # the task's own caps; None: the config's
    max_deferral_age: float | None = None
    last_reasons: list[str] = field(default_factory=list)
    deferred_at: float | None = None
    first_deferred_at: float | None = None
    expires_at: float | None = None  # first deferral + max age: parking ends here
    unknown_since: float | None = None  # first deferral on a resource the config lacked
    cursor: Any = None
    chunks: int = 0
    chunking: ChunkState | None = None  # a resumable job's learned chunk size (tasks/chunking.py)
    retries: int = 0  # retries spent on transient errors (workers/transient_errors.py)
    last_error: str | None = None  # the transient error the last retry was for
    lever_options: dict[str, Any] = field(default_factory=dict)  # its task's options for lever modules
    retry_max: int | None = None  # rq's `Retry(max=...)` given through options(): rq keeps only what is left
    unknown_keys: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, job: Job) -> JobMeta:
        """The job's meta; a plain rq job (or unreadable meta) has the defaults: no resources."""
        return cls.from_dict(job.meta.get(META_KEY) if isinstance(job.meta, dict) else None)

    @classmethod
    def from_dict(cls, raw: object) -> JobMeta:
        if not isinstance(raw, dict):
            return cls()
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "unknown_keys"}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name in known:
                values[name] = _coerce(name, value)
        values["unknown_keys"] = {k: v for k, v in raw.items() if k not in known}
        try:
            return cls(**{k: v for k, v in values.items() if v is not _INVALID})
        except (TypeError, ValueError):
            return cls()

    def to_dict(self) -> dict[str, Any]:
        """What is stored: the fields that say something (as compact as the meta has always been)."""
        stored: dict[str, Any] = {"task": self.task, "resources": list(self.resources), "deferrals": self.deferrals}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if name == "weight" and value == 1.0:
                continue  # the default: left out, as the meta has always been without one
            empty = value is None or value is False or value == [] or value == {}
            if not empty and not (name in _ZERO_OMITTED and value == 0):
                stored[name] = value  # a cap of 0 is a cap: only absent values are left out
        if self.cursor is not None or self.chunks:
            stored["cursor"] = self.cursor
        if self.chunking is not None:
            stored["chunking"] = self.chunking.to_dict()
        return {**self.unknown_keys, **stored}

    def store(self, job: Job) -> None:
        """Into the job's in-memory meta; the caller's move writes it to Redis."""
        job.meta[META_KEY] = self.to_dict()


def task_name(job: Job) -> str:
    """The task a job runs: from its meta, else (a plain rq job) its function's name."""
    task = JobMeta.of(job).task
    if task:
        return task
    return job.func_name.rsplit(".", 1)[-1] if job.func_name else "unknown"


_OPTIONAL = (
    "idempotent",
    "resumable",
    "concurrency",
    "rate",
    "weight",
    "max_deferrals",
    "max_deferral_age",
    "last_reasons",
    "deferred_at",
    "first_deferred_at",
    "expires_at",
    "unknown_since",
    "chunks",
    "retries",
    "last_error",
    "lever_options",
    "retry_max",
)
_ZERO_OMITTED = ("chunks", "retries")  # counts left out at 0, as the meta has always been without them
_INVALID = object()


def _coerce(name: str, value: Any) -> Any:
    """One stored field to its type; a damaged field falls back to its default, not to an exception."""
    try:
        if name == "task":
            return str(value)
        if name == "resources":
            return tuple(str(r) for r in value) if isinstance(value, list | tuple) else _INVALID
        if name in ("deferrals", "chunks", "retries"):
            return int(value)
        if name in ("idempotent", "resumable"):
            return value is True
        if name in ("concurrency", "max_deferrals", "retry_max"):
            return None if value is None else int(value)
        if name == "last_error":
            return None if value is None else str(value)
        if name == "rate":
            return None if value is None else str(parse_rate(value))
        if name == "weight":
            weight = float(value)
            return weight if type(value) is not bool and math.isfinite(weight) and weight > 0 else _INVALID
        if name == "lever_options":
            return {str(k): v for k, v in value.items()} if isinstance(value, dict) else _INVALID
        if name == "last_reasons":
            return [str(r) for r in value] if isinstance(value, list) else _INVALID
        if name == "cursor":
            return value
        if name == "chunking":
            return ChunkState.from_dict(value)  # damaged: None, and the job sizes its chunks afresh
        return None if value is None else float(value)
    except (TypeError, ValueError, OverflowError):  # int(inf): JSON meta may hold Infinity
        return _INVALID
