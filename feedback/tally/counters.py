"""Fleet-wide job counters in Redis, so one exporter sees every worker that came and went.

Each kind (started, finished, failed, deferred, retried, ...) is one hash; a field holds the labels
`queue|task|reason` (reason empty where it does not apply) and its value the count.
"""

from __future__ import annotations

import msgspec
from redis import Redis

from easeoff.feedback import keys

KINDS = ("started", "finished", "failed", "deferred", "expired", "abandoned", "retried")


class Count(msgspec.Struct, frozen=True):
    queue: str
    task: str
    reason: str
    value: int


counter_key = keys.counter_key


class Labels(msgspec.Struct, frozen=True):
    """A counter's labels, encoded once as its hash field `queue|task|reason` (a `|` inside a
    label is stored as `/`) and decoded only here."""

    queue: str
    task: str
    reason: str = ""

    @property
    def field(self) -> str:
        return "|".join(part.replace("|", "/") for part in (self.queue, self.task, self.reason))

    @classmethod
    def of_field(cls, field: bytes | str) -> Labels:
        text = field.decode() if isinstance(field, bytes) else field
        queue, task, reason = [*text.split("|", 2), "", ""][:3]
        return cls(queue, task, reason)


def counter_field(queue: str, task: str, reason: str = "") -> str:
    return Labels(queue, task, reason).field


def read_counts(redis: Redis) -> dict[str, list[Count]]:
    with redis.pipeline(transaction=False) as pipe:
        for kind in KINDS:
            pipe.hgetall(counter_key(kind))
        raw = pipe.execute()
    counts: dict[str, list[Count]] = {}
    for kind, fields in zip(KINDS, raw, strict=True):
        rows = []
        for field, value in fields.items():
            labels = Labels.of_field(field)
            rows.append(Count(labels.queue, labels.task, labels.reason, int(value)))
        counts[kind] = sorted(rows, key=lambda c: (c.queue, c.task, c.reason))
    return counts
