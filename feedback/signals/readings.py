"""A host's latest probe result, as stored in Redis and read by every worker."""

from __future__ import annotations

import json
from typing import Any

import msgspec


class Reading(msgspec.Struct, frozen=True):
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
        data: dict[str, Any] = {
            "host": self.host,
            "taken_at": self.taken_at,
            "values": self.values,
            "strained": self.strained,
            "error": self.error,
            "notes": self.notes,
        }
        if self.dormant:  # only then: a busy fleet's readings stay as they were
            data["dormant"] = True
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reading:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            host=str(data["host"]),
            taken_at=float(data["taken_at"]),
            values={str(k): float(v) for k, v in data.get("values", {}).items()},
            strained={str(k): bool(v) for k, v in data.get("strained", {}).items()},
            error=data.get("error"),
            notes={str(k): str(v) for k, v in data.get("notes", {}).items()},
            dormant=data.get("dormant") is True,
        )
