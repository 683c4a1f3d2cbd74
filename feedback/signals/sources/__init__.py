"""Where readings come from: one source per kind, each in a module of its own here.

A source reads one probe target and returns its values and notes, or raises ProbeError (a
short message, no secret, that goes into reasons). MySQL hosts are read by the `mysql`
source; a traffic signal by the source its config names (`source = "app"`, `"prometheus"`).
A new source is one file in this folder: it registers itself with `@register(KIND)`, and
every module here is imported when the first probe asks for its source.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Protocol

from redis import Redis

from easeoff.feedback.config import Config, SignalConfig
from easeoff.feedback.signals.readings import Reading

Values = dict[str, float]
Notes = dict[str, str]


class ProbeError(Exception):
    """A probe that failed; the message is short, names no secret and goes into reasons."""


class Source(Protocol):
    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> tuple[Values, Notes]: ...

    def release(self, target: str) -> None:
        """This process no longer probes `target`: let go of what it kept for it (a connection)."""


SourceFactory = Callable[[Config, Redis], Source]
_SOURCES: dict[str, SourceFactory] = {}


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    def add(factory: SourceFactory) -> SourceFactory:
        _SOURCES[kind] = factory
        return factory

    return add


def source_kinds() -> dict[str, SourceFactory]:
    """Every registered source, each module of this package imported first."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(_SOURCES)


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

    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> tuple[Values, Notes]:
        kind = "mysql" if target in self.config.hosts else signal_of(self.config, target).source
        source = self.sources.get(kind)
        if source is None:
            raise ProbeError(f"no source of kind {kind!r} for {target}")
        return source.read(target, previous, context)

    def release(self, target: str) -> None:
        for source in self.sources.values():
            source.release(target)
