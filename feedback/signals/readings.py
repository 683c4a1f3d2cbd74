"""A host's latest probe result, as stored in Redis and read by every worker."""

from __future__ import annotations

import msgspec


class Reading(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one probe of one host saw, and which signals it left strained.

    `strained` carries the hysteresis state, so the next probe (by any worker) can
    continue from it and the gate stays a pure function of stored readings.
    """

    host: str
    taken_at: float
    values: dict[str, float] = msgspec.field(default_factory=dict)
    strained: dict[str, bool] = msgspec.field(default_factory=dict)
    error: str | None = None
    notes: dict[str, str] = msgspec.field(default_factory=dict)
    # Taken at the dormant pace (no job wanted the host): the next comes a dormant interval
    # later, and no job is admitted on it (feedback/signals/demand.py).
    dormant: bool = False

    def signal_values(self) -> dict[str, float]:
        """The readings that are signals; `_`-prefixed values are probe bookkeeping (raw counters)."""
        return {k: v for k, v in self.values.items() if not k.startswith("_")}

    def to_json(self) -> str:
        """Compact JSON; what is at its default (no error, not dormant, nothing strained) is left
        out, which every reader since the first has read as the default."""
        return _ENCODER.encode(self).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reading:
        """msgspec.DecodeError (a ValueError) on a reading that is not one."""
        return _DECODER.decode(raw)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Reading)
