"""A few hours of history in Redis, so the page and `easeoff top` can draw trends without Prometheus.

Every `period` seconds one compact JSON sample — queue counts, deferral totals by reason and
each signal's latest value per host — is pushed onto one Redis list and the list trimmed in
the same MULTI, so it stays bounded (about six hours' worth) however long the fleet runs.
Several exporters may run; a short `SET NX PX` lock per period lets only one of them sample,
so the list holds one sample per period rather than one per exporter.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.config import Config
from easeoff.feedback.observe.queue_stats import queue_stats
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.tally.counters import read_counts

HISTORY_KEY = keys.HISTORY
TICK_KEY = keys.HISTORY_TICK
DEFAULT_PERIOD = 10.0
KEEP_SECONDS = 6 * 3600
MAX_SAMPLES = 10_000  # a short period must not grow the list without end
PAGE = 256  # samples per LRANGE when reading back


class Sample(msgspec.Struct, frozen=True):
    """What the fleet looked like at `t` (unix seconds)."""

    t: float
    queues: dict[str, dict[str, float]] = msgspec.field(
        default_factory=dict
    )  # queue → ready/deferred/running/failed/age
    deferrals: dict[str, int] = msgspec.field(default_factory=dict)  # reason kind → deferrals ever counted
    signals: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)  # signal → host → latest value

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "queues": self.queues, "deferrals": self.deferrals, "signals": self.signals}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Sample:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            t=float(data["t"]),
            queues={str(q): {str(k): float(v) for k, v in m.items()} for q, m in data.get("queues", {}).items()},
            deferrals={str(k): int(v) for k, v in data.get("deferrals", {}).items()},
            signals={str(s): {str(h): float(v) for h, v in m.items()} for s, m in data.get("signals", {}).items()},
        )


def keep_for(period: float) -> int:
    """How many samples make six hours at `period`, within [1, MAX_SAMPLES]."""
    return max(1, min(MAX_SAMPLES, int(KEEP_SECONDS / period)))


def take_sample(redis: Redis, config: Config, now: float) -> Sample:
    """Read one sample with the same helpers `status` and the exporter use."""
    stats = queue_stats(redis, known_queue_names(redis, config.queues), now)
    deferrals: dict[str, int] = {}
    for count in read_counts(redis)["deferred"]:
        reason = count.reason or "unknown"
        deferrals[reason] = deferrals.get(reason, 0) + count.value
    signals: dict[str, dict[str, float]] = {}
    for target, reading in ReadingsCache(redis, config).stored().readings.items():
        if reading is None:
            continue
        for signal, value in reading.values.items():
            signals.setdefault(signal, {})[target] = round(value, 4)
    queues = {
        s.name: {
            "ready": s.ready,
            "deferred": s.deferred,
            "running": s.running,
            "failed": s.failed,
            "age": s.oldest_ready_age_s,
        }
        for s in stats
    }
    return Sample(t=round(now, 3), queues=queues, deferrals=deferrals, signals=signals)


def append(redis: Redis, sample: Sample, keep: int) -> None:
    """Push and trim in one transaction: the list never holds more than `keep` samples."""
    with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(HISTORY_KEY, sample.to_json())
        pipe.ltrim(HISTORY_KEY, 0, keep - 1)
        pipe.execute()


def read_history(redis: Redis, since: float) -> list[Sample]:
    """Samples taken at or after `since`, oldest first; reads only the window, newest page first."""
    found: list[Sample] = []
    start = 0
    while True:
        page = redis.lrange(HISTORY_KEY, start, start + PAGE - 1)
        samples = [Sample.from_json(raw) for raw in page]
        found += [s for s in samples if s.t >= since]
        if len(page) < PAGE or any(s.t < since for s in samples):
            break
        start += PAGE
    return sorted(found, key=lambda s: s.t)


class HistorySampler:
    """Samples every `period` seconds when asked (`maybe_sample` on each exporter tick)."""

    def __init__(
        self,
        redis: Redis,
        config: Config,
        period: float = DEFAULT_PERIOD,
        keep: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.redis = redis
        self.config = config
        self.period = period
        self.keep = keep_for(period) if keep is None else keep
        self.clock = clock
        self.token = uuid.uuid4().hex
        self._next_at: float | None = None

    def maybe_sample(self, now: float | None = None) -> Sample | None:
        """Sample if this process's period has come round and no other sampler took it; else None."""
        now = self.clock() if now is None else now
        if self._next_at is not None and now < self._next_at - 0.001 * self.period:
            return None
        self._schedule(now)
        px = max(1, int(self.period * 1000 * 0.9))  # expires just before the next period
        if not self.redis.set(TICK_KEY, self.token, nx=True, px=px):
            return None  # another exporter sampled this period
        sample = take_sample(self.redis, self.config, now)
        append(self.redis, sample, self.keep)
        return sample

    def _schedule(self, now: float) -> None:
        """Next due one period on; periods missed while Redis was away are skipped, not bunched."""
        if self._next_at is None:
            self._next_at = now
        behind = max(0.0, now - self._next_at)
        self._next_at += self.period * (1 + int(behind // self.period))
