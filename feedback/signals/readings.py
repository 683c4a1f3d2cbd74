"""A host's latest probe result, as stored in Redis and read by every worker."""

from __future__ import annotations

import msgspec


class Reading(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one probe of one host saw, and which signals it left strained.

    Each kind of data has its field: `values` holds the signals only (what the gate judges and
    the exporter shows), `counters` the probe's own bookkeeping for the next probe (raw status
    counters for rates, the server's clock and id, the live latency a budget reads, what the
    probe cost), `predictions` the signals held by their trend (seconds until they reach high,
    signals/trend.py). `strained` carries the hysteresis state, so the next probe (by any
    worker) can continue from it and the gate stays a pure function of stored readings;
    `shadow_strained` the state under ops' shadow thresholds, a band of its own
    (signals/hysteresis.py, verdict/shadow.py).
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
    # Last, so a reading built by position (host, taken_at, values, strained, ...) still is.
    counters: dict[str, float] = msgspec.field(default_factory=dict)
    predictions: dict[str, float] = msgspec.field(default_factory=dict)
    shadow_strained: dict[str, bool] = msgspec.field(default_factory=dict)

    def to_json(self) -> str:
        """Compact JSON; what is at its default (no error, not dormant, nothing strained) is left
        out, which every reader since the first has read as the default."""
        return _ENCODER.encode(self).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reading:
        """msgspec.DecodeError (a ValueError) on a reading that is not one. A reading in the
        shape before typed fields (stored by the previous release, alive for a few intervals
        after a deploy) is read into the fields: it must not fail closed and hold the fleet."""
        reading = _DECODER.decode(raw)
        return _from_old_shape(reading) if _is_old_shape(reading) else reading


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Reading)

# The shape before typed fields kept everything in two dicts, told apart by their keys:
# in `values`, `_NAME` for the probe's bookkeeping and `_eta:NAME` for a prediction; in
# `strained`, `shadow:NAME` for the shadow band. Only readings stored by that release have
# them (a reading's key expires a few intervals after its last store), so this can go in the
# release after next.
_OLD_BOOKKEEPING = "_"
_OLD_PREDICTION = "_eta:"
_OLD_SHADOW = "shadow:"


def _is_old_shape(reading: Reading) -> bool:
    return any(k.startswith(_OLD_BOOKKEEPING) for k in reading.values) or any(
        k.startswith(_OLD_SHADOW) for k in reading.strained
    )


def _from_old_shape(reading: Reading) -> Reading:
    """The old reading with its prefixed keys moved into the fields they meant."""
    values, counters, predictions = {}, dict(reading.counters), dict(reading.predictions)
    for key, number in reading.values.items():
        if key.startswith(_OLD_PREDICTION):
            predictions[key.removeprefix(_OLD_PREDICTION)] = number
        elif key.startswith(_OLD_BOOKKEEPING):
            counters[key.removeprefix(_OLD_BOOKKEEPING)] = number
        else:
            values[key] = number
    strained, shadow = {}, dict(reading.shadow_strained)
    for key, held in reading.strained.items():
        if key.startswith(_OLD_SHADOW):
            shadow[key.removeprefix(_OLD_SHADOW)] = held
        else:
            strained[key] = held
    return msgspec.structs.replace(
        reading, values=values, counters=counters, predictions=predictions, strained=strained, shadow_strained=shadow
    )
