"""Why work waits: one typed reason, read by fields, shown as one line of text.

Every hold the gate, the switches and the limits find is a `Reason`. Code that acts on
a reason — where a deferred job parks, the label it is counted under, whether a cut of
the concurrency limit is due — reads its fields; `str(reason)` is the text operators
see in `status`, logs and job meta (as freno's CheckResult carries status, value,
threshold and message apart). Nothing parses that text back.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal

import msgspec


class Kind(StrEnum):
    """What sort of hold a reason is. A signal's own strain is one kind, `SIGNAL`, whose
    `Reason.name` names the signal; it is labelled and shown by that name (`Reason.label`)."""

    SIGNAL = "signal"  # a signal's reading crossed its marks, or cannot be judged
    LEVER = "lever"  # a lever module's own hold (feedback/levers/lever.py), labelled by its `name`
    NO_READING = "no_reading"
    STALE_READING = "stale_reading"
    PROBE_ERROR = "probe_error"
    HOST_OUT = "host_out"
    REPLICATION = "replication"
    UNKNOWN_RESOURCE = "unknown_resource"
    PAUSED = "paused"
    THROTTLED = "throttled"
    CONCURRENCY = "concurrency"
    YIELD = "yield"
    SHARE = "share"  # a free slot is another task's turn: tasks share a tight scope by weight
    CHECKPOINT = "checkpoint"
    RATE = "rate"
    PACE = "pace"  # a budget's duty cycle holds the next start back (feedback/budget/)
    DB_UNREACHABLE = "db_unreachable"  # the job's database failed it mid-run (workers/db_outages.py)
    SWITCH_UNREADABLE = "switch_unreadable"  # an ops switch this version cannot read (levers/switches.py)
    HOSTS_OUT_UNREADABLE = "hosts_out_unreadable"  # the hosts-out list cannot be read (levers/hosts_out.py)


NAMED = frozenset((Kind.SIGNAL, Kind.LEVER))  # the kinds labelled by the reason's `name`


# What a job deferred for this reason waits for: its resources to clear, ops to resume its
# task, a concurrency slot (normal or low priority) under `subject`, or just its delay.
WaitsFor = Literal["resources", "task", "slot", "slot_low", "delay"]
Level = Literal["high", "low", "critical", "predicted"]


class Reason(msgspec.Struct, frozen=True):
    kind: Kind
    subject: str  # where: a host, a traffic source, a resource, a scope (`task:x`, `all`)
    value: float | None = None  # the reading, slots in use, the throttle ratio, a reading's age
    threshold: float | None = None  # the mark `value` crossed, or the limit of slots
    level: Level | None = None  # which of the signal's marks `threshold` is
    detail: str = ""  # for people: the probe error, who paused and why, the checkpoint's cause
    waits_for: WaitsFor = "resources"
    name: str = ""  # a SIGNAL's signal (`connections`, `lag`, a custom one), a LEVER's own label

    @property
    def label(self) -> str:
        """What the reason is counted and shown under: the signal's (or lever's) name for theirs,
        else the kind — the `reason` label of the counters and metrics, the head of `str()`."""
        if self.kind in NAMED and self.name:
            return self.name
        return str(self.kind)

    def __str__(self) -> str:
        if self.kind == Kind.CHECKPOINT:
            return f"checkpoint: {self.detail}"
        head = f"{self.label}:{self.subject}"
        if self.level is not None and self.value is not None and self.threshold is not None:
            if self.level == "predicted":
                return f"{head} {self.value:.4g} predicted to reach high {self.threshold:g} {self.detail}"
            if self.level == "low":
                return f"{head} {self.value:.4g} not yet below low {self.threshold:g}"
            return f"{head} {self.value:.4g} > {self.level} {self.threshold:g}"
        if self.kind in (Kind.CONCURRENCY, Kind.YIELD, Kind.SHARE):
            slots = f"{head} {self.value:.0f}/{self.threshold:.0f} in use"
            return f"{slots}, {self.detail}" if self.detail else slots
        if self.kind == Kind.RATE:
            return f"{head} at {self.detail}, next start in {self.value:.1f}s"
        if self.kind == Kind.PACE and self.value is not None:
            return f"{head} {self.detail}, next start in {self.value:.1f}s"
        if self.kind == Kind.THROTTLED:
            return f"{head} ratio {self.value:g} ({self.detail})"
        if self.kind == Kind.STALE_READING:
            return f"{head} ({self.value:.1f}s old)"
        if self.kind in (Kind.HOST_OUT, Kind.REPLICATION, Kind.PROBE_ERROR, Kind.PAUSED, Kind.DB_UNREACHABLE):
            return f"{head} ({self.detail})"
        return f"{head} {self.detail}" if self.detail else head


def texts(reasons: Iterable[Reason]) -> list[str]:
    """The reasons as operators read them."""
    return [str(r) for r in reasons]


def joined(reasons: Iterable[Reason]) -> str:
    return "; ".join(texts(reasons))


class Verdict(msgspec.Struct, frozen=True):
    """What a check answers for a claimed job: admit it, or defer it for these reasons (the
    delay before it is looked at again; `critical`: reasons that stop a running job too)."""

    admit: bool
    reasons: tuple[Reason, ...] = ()
    delay: float = 0.0
    critical: tuple[Reason, ...] = ()

    @property
    def label(self) -> str:
        return "admit" if self.admit else "defer"

    @property
    def texts(self) -> list[str]:
        return texts(self.reasons)


ADMIT = Verdict(admit=True)
