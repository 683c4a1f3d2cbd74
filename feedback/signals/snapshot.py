"""Everything the gate needs to know about the fleet at one moment, read in one round trip."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY, parse_hosts_out
from easeoff.feedback.levers.switches import SWITCHES_KEY, Switches, parse_switches
from easeoff.feedback.signals.readings import Reading


class Snapshot(msgspec.Struct, frozen=True):
    """Cached readings by probe target (host or traffic source), the hosts ops marked out,
    the contingency switches in force, and when the earliest deferred job comes due (read in
    the same MGET, so the prober skips promotion rounds with nothing due at no extra cost)."""

    readings: Mapping[str, Reading | None]
    hosts_out: Mapping[str, str] = msgspec.field(default_factory=dict)
    switches: Switches = msgspec.field(default_factory=Switches)
    next_due: float | None = None

    def get(self, target: str) -> Reading | None:
        return self.readings.get(target)


def read_snapshot(redis: Redis, targets: Iterable[str]) -> Snapshot:
    """What Redis holds now, without probing: one MGET of the readings, hosts out, switches and
    the earliest due time."""
    targets = list(targets)
    names = [*(keys.READING.format(host=t) for t in targets), HOSTS_OUT_KEY, SWITCHES_KEY, keys.NEXT_DUE]
    *raw, out, switches, next_due = redis.mget(names)
    readings = {t: (Reading.from_json(r) if r else None) for t, r in zip(targets, raw, strict=True)}
    return Snapshot(
        readings=readings,
        hosts_out=parse_hosts_out(out),
        switches=parse_switches(switches),
        next_due=_number(next_due),
    )


def _number(raw: bytes | str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
