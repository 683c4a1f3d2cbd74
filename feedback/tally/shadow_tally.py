"""What shadow policies would have deferred, counted fleet-wide: "would have deferred 312 jobs on
shard:7 in the last hour".

Each would-be deferral adds one to a per-minute hash (kept two hours) and to a running total,
by `resource|signal`, and notes the latest reason; `status`, the page and the exporter read them.
A count, not a job move: one pipeline, no transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import msgspec
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.reasons import Reason

BUCKET_S = 60
KEEP_S = 7200
WINDOW_S = 3600.0


class ShadowCount(msgspec.Struct, frozen=True):
    resource: str
    signal: str
    last_hour: int
    total: int
    last_reason: str
    last_at: float | None

    def describe(self) -> str:
        return f"would have deferred {self.last_hour} jobs on {self.resource} in the last hour ({self.signal})"

    def as_dict(self) -> dict[str, object]:
        return {
            "resource": self.resource,
            "signal": self.signal,
            "last_hour": self.last_hour,
            "total": self.total,
            "last_reason": self.last_reason,
            "last_at": self.last_at,
        }


def policy(reason: Reason) -> str:
    """The signal a shadow reason comes from (or the failure kind: a missing reading)."""
    return reason.label


def field(resource: str, signal: str) -> str:
    return f"{resource.replace('|', '/')}|{signal.replace('|', '/')}"


def record(redis: Redis, held: Mapping[str, Sequence[Reason]], now: float) -> None:
    """One job the shadow policies would have deferred: for each resource, the reasons it would have held."""
    latest = {field(resource, policy(r)): str(r) for resource, reasons in held.items() for r in reasons}
    if not latest:
        return
    bucket = keys.SHADOW_MINUTE.format(minute=int(now // BUCKET_S))
    with redis.pipeline(transaction=False) as pipe:
        for name in latest:
            pipe.hincrby(bucket, name, 1)
            pipe.hincrby(keys.SHADOW_TOTAL, name, 1)
        pipe.expire(bucket, KEEP_S)
        pipe.hset(keys.SHADOW_LAST, mapping={k: json.dumps({"at": now, "reason": t}) for k, t in latest.items()})
        pipe.execute()


def read(redis: Redis, now: float, window: float = WINDOW_S) -> list[ShadowCount]:
    """Every resource and signal a shadow policy has ever held, with its count over `window`."""
    first, last = int((now - window) // BUCKET_S) + 1, int(now // BUCKET_S)
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.SHADOW_TOTAL)
        pipe.hgetall(keys.SHADOW_LAST)
        for minute in range(first, last + 1):
            pipe.hgetall(keys.SHADOW_MINUTE.format(minute=minute))
        totals, latest, *buckets = pipe.execute()
    recent: dict[str, int] = {}
    for bucket in buckets:
        for name, value in bucket.items():
            recent[_text(name)] = recent.get(_text(name), 0) + int(value)
    counts = []
    for raw_name, total in sorted(totals.items()):
        name = _text(raw_name)
        resource, _, signal = name.partition("|")
        note = _note(latest.get(raw_name))
        at = note.get("at")
        last_at = float(at) if isinstance(at, int | float) else None
        counts.append(
            ShadowCount(resource, signal, recent.get(name, 0), int(total), str(note.get("reason", "")), last_at)
        )
    return counts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _note(raw: bytes | str | None) -> dict[str, object]:
    try:
        note = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}
