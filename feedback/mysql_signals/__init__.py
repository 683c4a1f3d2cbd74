"""The built-in MySQL signals read from SHOW GLOBAL STATUS, one module each.

As Vitess's throttler keeps one file per self metric: a module here defines `SIGNAL`, and the
config (its name is a built-in signal), the probe (its status variables are read, its value
worked out on every probe of a host) and the gate (it is judged per host) find it by name. A
new signal of this kind is a file here and its test. Signals read some other way (the canary's
latency, the history list length's fallback, a replica's lag) are the MySQL source's own.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

CLOCK = "clock"  # the reading's counter holding the server's clock when the probe read its status


@dataclass(frozen=True)
class ServerStatus:
    """One probe's look at a host: the status variables asked for (lower-cased names), the
    server's settings and clock, and the previous probe's counters (rates need them)."""

    status: Mapping[str, float]
    max_connections: float
    clock: float  # the server's own clock (UNIX_TIMESTAMP(NOW(6))): rates are per its second
    previous: Mapping[str, float] | None = None

    def counted(self, variable: str) -> float | None:
        return self.status.get(variable.lower())


@dataclass(frozen=True)
class StatusSignal:
    name: str
    variables: tuple[str, ...]  # SHOW GLOBAL STATUS variables it reads
    value: Callable[[ServerStatus], float | None]  # None: not readable here (fails closed)
    kept: tuple[str, ...] = ()  # variables kept in the reading's counters for the next probe


def gauge(name: str, variable: str, own: float = 0.0) -> StatusSignal:
    """The variable as it stands, less what the probe itself adds (`own`: its connection, its thread)."""

    def value(server: ServerStatus) -> float | None:
        counted = server.counted(variable)
        return None if counted is None else max(counted - own, 0.0)

    return StatusSignal(name, (variable,), value)


def rate(name: str, variable: str) -> StatusSignal:
    """A counter's increase per second of the server's clock since the last probe (none on the first)."""
    kept = kept_key(variable)

    def value(server: ServerStatus) -> float | None:
        counted, previous = server.counted(variable), server.previous
        if counted is None or previous is None or kept not in previous or CLOCK not in previous:
            return None
        elapsed = server.clock - previous[CLOCK]
        return max(counted - previous[kept], 0.0) / elapsed if elapsed > 0 else None

    return StatusSignal(name, (variable,), value, kept=(variable,))


def kept_key(variable: str) -> str:
    """Where a reading's counters keep a status counter for the next probe's rate."""
    return variable.lower()


@cache
def status_signals() -> dict[str, StatusSignal]:
    """Every signal defined here, by name, in the modules' order."""
    found: dict[str, StatusSignal] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        signal = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SIGNAL", None)
        if isinstance(signal, StatusSignal):
            found[signal.name] = signal
    return found
