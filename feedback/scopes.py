"""What a switch, a limit or a parked job applies to, typed: parsed once from its text and
spelled back only where text is stored (a switch's JSON, a Redis key, a reason's subject).

As Vitess's throttler keeps metric scopes apart from their names (`base/metric_scope.go`):
`all`, `queue:NAME`, `task:NAME`, `resource:NAME`, and for a threshold a signal everywhere
(`lag`) or on one resource (`lag@shard:1`).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ScopeKind(StrEnum):
    ALL = "all"
    QUEUE = "queue"
    TASK = "task"
    RESOURCE = "resource"
    SIGNAL = "signal"


NAMED = (ScopeKind.QUEUE, ScopeKind.TASK, ScopeKind.RESOURCE)  # spelled `KIND:NAME`


class Scope(msgspec.Struct, frozen=True, order=True):
    kind: ScopeKind
    name: str = ""
    resource: str = ""  # a signal's scope on one resource only

    @classmethod
    def everything(cls) -> Scope:
        return cls(ScopeKind.ALL)

    @classmethod
    def queue(cls, name: str) -> Scope:
        return cls(ScopeKind.QUEUE, name)

    @classmethod
    def task(cls, name: str) -> Scope:
        return cls(ScopeKind.TASK, name)

    @classmethod
    def on_resource(cls, name: str) -> Scope:
        return cls(ScopeKind.RESOURCE, name)

    @classmethod
    def signal(cls, name: str, resource: str = "") -> Scope:
        return cls(ScopeKind.SIGNAL, name, resource)

    @classmethod
    def parse(cls, text: str, signal: bool = False) -> Scope:
        """A scope from its text (`signal`: a threshold's, `NAME[@RESOURCE]`); ValueError if it is none."""
        if signal:
            name, _, resource = text.partition("@")
            if not name:
                raise ValueError(f"bad signal scope {text!r}")
            return cls.signal(name, resource)
        if text == ScopeKind.ALL:
            return cls.everything()
        kind, _, name = text.partition(":")
        if not name or kind not in NAMED:
            raise ValueError(f"bad scope {text!r}: use all, queue:NAME, task:NAME or resource:NAME")
        return cls(ScopeKind(kind), name)

    def __str__(self) -> str:
        if self.kind == ScopeKind.ALL:
            return "all"
        if self.kind == ScopeKind.SIGNAL:
            return f"{self.name}@{self.resource}" if self.resource else self.name
        return f"{self.kind}:{self.name}"

    @property
    def held(self) -> Scope:
        """What a switch on this scope holds when it cannot be read: a signal's resource, or
        everything for a signal everywhere; any other scope itself."""
        if self.kind == ScopeKind.SIGNAL:
            return Scope.on_resource(self.resource) if self.resource else Scope.everything()
        return self
