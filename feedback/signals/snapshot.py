"""Everything the gate needs to know about the fleet at one moment, read in one round trip."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from easeoff.feedback.levers.switches import Switches
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
