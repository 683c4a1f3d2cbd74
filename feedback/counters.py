"""Fleet-wide job counters in Redis, so one exporter sees every worker that came and went.

Each kind (started, finished, failed, deferred) is one hash; a field holds the labels
`queue|task|reason` (reason empty where it does not apply) and its value the count.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

KINDS = ("started", "finished", "failed", "deferred", "expired", "abandoned")
COUNTER_KEY = "easeoff:counters:{kind}"


@dataclass(frozen=True)
class Count:
    queue: str
    task: str
    reason: str
    value: int


def counter_key(kind: str) -> str:
    return COUNTER_KEY.format(kind=kind)


def counter_field(queue: str, task: str, reason: str = "") -> str:
    return "|".join(part.replace("|", "/") for part in (queue, task, reason))


def reason_kind(reason: str) -> str:
    """`connections:db1 0.9 > high 0.8` → `connections`: the label a reason is counted under."""
    return reason.split(":", 1)[0].split(" ", 1)[0] or "unknown"


def read_counts(redis: Redis) -> dict[str, list[Count]]:
    with redis.pipeline(transaction=False) as pipe:
        for kind in KINDS:
            pipe.hgetall(counter_key(kind))
        raw = pipe.execute()
    counts: dict[str, list[Count]] = {}
    for kind, fields in zip(KINDS, raw, strict=True):
        rows = []
        for field, value in fields.items():
            queue, task, reason = [*field.decode().split("|", 2), "", ""][:3]
            rows.append(Count(queue, task, reason, int(value)))
        counts[kind] = sorted(rows, key=lambda c: (c.queue, c.task, c.reason))
    return counts
