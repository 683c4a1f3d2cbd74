"""The event log: operators' changes (with who, when and why) and the system's own flips.

One bounded Redis stream holds them all, so `easeoff log`, `status`, the page's markers
and Grafana's annotations read the same record. Operators' entries (switches, hosts,
annotations) are the audit log; verdict flips and expired switches are written by
whichever worker probed for the fleet. A write can ride in the caller's transaction,
so a change and its audit entry land together or not at all.
"""

from __future__ import annotations

import getpass
import os
from typing import Any, cast

import msgspec
from redis import Redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from easeoff.feedback import clock, keys

EVENTS_KEY = keys.EVENTS
EVENT_COUNTS_KEY = keys.EVENT_COUNTS
MAX_EVENTS = 10_000  # the stream is trimmed (approximately) to this many entries
OPERATOR_KINDS = ("switch", "host", "annotation")  # what an operator did: the audit log
KINDS = (*OPERATOR_KINDS, "verdict", "watermark", "budget")  # budget: a controller's decision


class Event(msgspec.Struct, frozen=True):
    id: str
    at: float  # unix seconds
    kind: str  # one of KINDS
    text: str  # one line saying what happened
    who: str = ""
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "kind": self.kind, "text": self.text, "who": self.who, "why": self.why}


def operator() -> str:
    """Who is at the keyboard: `EASEOFF_OPERATOR`, else the login name."""
    return os.environ.get("EASEOFF_OPERATOR") or _login()


def record(
    redis: Redis | Pipeline, kind: str, text: str, who: str = "", why: str = "", at: float | None = None
) -> None:
    """Append one event; on a pipeline it lands with the rest of the caller's transaction."""
    fields: dict[FieldT, EncodableT] = {
        "at": repr(clock.now() if at is None else at),
        "kind": kind,
        "text": text,
        "who": who,
        "why": why,
    }
    redis.xadd(EVENTS_KEY, fields, maxlen=MAX_EVENTS, approximate=True)
    redis.hincrby(EVENT_COUNTS_KEY, kind, 1)


def recent(redis: Redis, limit: int = 50, kinds: tuple[str, ...] | None = None) -> list[Event]:
    """The latest events, newest first; filtered by kind when `kinds` is given."""
    found: list[Event] = []
    last = "+"
    while len(found) < limit:
        batch = cast(list[StreamEntry], redis.xrevrange(EVENTS_KEY, max=last, count=max(limit * 2, 100)))
        if last != "+":
            batch = batch[1:]  # `max` is inclusive: skip the entry the last batch ended on
        if not batch:
            break
        found += [e for e in map(_event, batch) if kinds is None or e.kind in kinds]
        last = _text(batch[-1][0])
    return found[:limit]


def between(redis: Redis, start: float, end: float, limit: int = 1000) -> list[Event]:
    """Events from `start` to `end` (unix seconds), oldest first: for graphs and annotations."""
    raw = cast(
        list[StreamEntry], redis.xrange(EVENTS_KEY, min=str(int(start * 1000)), max=str(int(end * 1000)), count=limit)
    )
    return [_event(entry) for entry in raw]


def counts(redis: Redis) -> dict[str, int]:
    return {_text(k): int(v) for k, v in redis.hgetall(EVENT_COUNTS_KEY).items()}


StreamEntry = tuple[bytes, dict[bytes, bytes]]  # what XRANGE answers, per entry


def _event(entry: StreamEntry) -> Event:
    entry_id, fields = entry
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        at = float(data.get("at", ""))
    except ValueError:
        at = int(_text(entry_id).split("-", 1)[0]) / 1000
    return Event(
        id=_text(entry_id),
        at=at,
        kind=data.get("kind", ""),
        text=data.get("text", ""),
        who=data.get("who", ""),
        why=data.get("why", ""),
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
