"""A job's stored fields read as `easeoff job` shows them, without decoding its payload and
never with pickle: its meta, its task's name, its times, its latest result's type and value."""

from __future__ import annotations

import json
from base64 import b64decode
from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from easeoff.tasks.meta import META_KEY, JobMeta

RESULT_TYPES = {1: "successful", 2: "failed", 3: "stopped", 4: "retried"}


def restored(redis: Redis, job_id: str, raw: dict[bytes, bytes]) -> Job | None:
    """rq's job from its hash as read in the snapshot; None for damaged data (what the hash says is
    shown instead of a traceback). Its payload is not decoded here, and never with pickle."""
    job = Job(job_id, connection=redis, serializer=JSONSerializer)
    try:
        job.restore(raw)
    except Exception:
        return None
    return job


def meta_of(raw: bytes | str | None) -> JobMeta:
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        return JobMeta()
    return JobMeta.from_dict(decoded.get(META_KEY) if isinstance(decoded, dict) else None)


def task_of(meta: JobMeta, fields: dict[str, bytes]) -> str:
    """As tasks.meta.task_name names it, without decoding the payload: the meta's task, else the
    function's name rq wrote beside the data, else `?`."""
    if meta.task:
        return meta.task
    description = text_of(fields.get("description", b""))
    return description.split("(", 1)[0].rsplit(".", 1)[-1] if description else "?"


def result_type(latest: Any) -> str | None:
    if not latest:
        return None
    payload = latest[0][1]
    raw = payload.get(b"type", payload.get("type")) if isinstance(payload, dict) else None
    try:
        return RESULT_TYPES.get(int(raw)) if raw is not None else None
    except ValueError:
        return None


def return_value(latest: Any) -> Any:
    """The latest result's return value if it is JSON (what JSONSerializer wrote); nothing else is
    decoded: rq's Result.restore would unpickle a planted value."""
    if not latest:
        return None
    payload = latest[0][1]
    raw = payload.get(b"return_value", payload.get("return_value")) if isinstance(payload, dict) else None
    if raw is None:
        return None
    try:
        return json.loads(b64decode(raw))
    except ValueError:
        return "(not JSON: not shown)"


def time_of(raw: bytes | str | None) -> float | None:
    if not raw:
        return None
    text = text_of(raw)
    try:
        return utcparse(text).timestamp()
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def text_of(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
