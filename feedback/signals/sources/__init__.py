"""Where readings come from: one source per kind, each in a module of its own here.

A source reads one probe target and returns what it found as `Probed` (its signals' values,
notes, and the counters it keeps for its next probe; a source that keeps none may return a
plain `(values, notes)` tuple), or raises ProbeError (a short message, no secret, that goes
into reasons). MySQL hosts are read by the `mysql`
source; a traffic signal by the source its config names (`source = "app"`, `"prometheus"`).
A new source is one file in this folder: it registers its reader with `@register(KIND)` and
declares its config table as `TABLE` (a `config.schema.Signal` tagged `KIND`, with `traffic =
True` for a source read off no MySQL host); every module here is imported when the config is
read or the first probe asks for its source.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol

from redis import Redis

from easeoff.feedback.config import Config, SignalConfig
from easeoff.feedback.config.schema import Signal
from easeoff.feedback.signals.readings import Reading

Values = dict[str, float]
Notes = dict[str, str]


@dataclass
class Probed:
    """One read of a target: the signals' values, notes on them, and the probe's bookkeeping
    (`counters`: what the next probe needs, what this one cost), each into its own field of the
    `Reading` (signals/readings.py)."""

    values: Values = field(default_factory=dict)
    notes: Notes = field(default_factory=dict)
    counters: Values = field(default_factory=dict)


class ProbeError(Exception):
    """A probe that failed; the message is short, names no secret and goes into reasons."""


class Source(Protocol):
    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> Probed | tuple[Values, Notes]: ...

    def release(self, target: str) -> None:
        """This process no longer probes `target`: let go of what it kept for it (a connection)."""


SourceFactory = Callable[[Config, Redis], Source]
_SOURCES: dict[str, SourceFactory] = {}


_TABLES: dict[str, type[Signal]] = {}  # sources registered from outside this folder, with their tables


def register(kind: str, table: type[Signal] | None = None) -> Callable[[SourceFactory], SourceFactory]:
    """A source's reader; `table`, its config table, for a source defined outside this folder
    (a module here declares it as `TABLE`)."""

    def add(factory: SourceFactory) -> SourceFactory:
        _SOURCES[kind] = factory
        if table is not None:
            _TABLES[kind] = table
        return factory

    return add


def source_kinds() -> dict[str, SourceFactory]:
    """Every registered source, each module of this package imported first."""
    _import_all()
    return dict(_SOURCES)


def source_tables() -> tuple[type[Signal], ...]:
    """The config tables the source modules here declare (`TABLE`), beside the built-in ones."""
    found = {t.__struct_config__.tag: t for m in _import_all() if (t := getattr(m, "TABLE", None)) is not None}
    return tuple({**found, **_TABLES}.values())


def _import_all() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]


def signal_of(config: Config, target: str) -> SignalConfig:
    """The traffic signal whose cache entry `target` is (`app:web`, `prometheus:site_rps`)."""
    signal = next((s for s in config.signals.values() if s.source_key == target), None)
    if signal is None:
        raise ProbeError(f"unknown probe target {target}")
    return signal


class Prober:
    """Reads one probe target — a MySQL host or a traffic source — for the readings cache."""

    def __init__(self, config: Config, redis: Redis) -> None:
        self.config = config
        self.sources = {kind: factory(config, redis) for kind, factory in source_kinds().items()}

    def read(self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]) -> Probed:
        kind = "mysql" if target in self.config.hosts else signal_of(self.config, target).source
        source = self.sources.get(kind)
        if source is None:
            raise ProbeError(f"no source of kind {kind!r} for {target}")
        found = source.read(target, previous, context)
        return found if isinstance(found, Probed) else Probed(*found)

    def release(self, target: str) -> None:
        for source in self.sources.values():
            source.release(target)
