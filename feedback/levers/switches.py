"""Contingency switches: ops pause work, throttle a task, or move a signal's thresholds.

Every switch lives in one JSON value in Redis, read in the same MGET as the readings,
so each worker sees a change on its next look at the gate (within one probe interval)
and the gate stays a pure function of what it was given. A switch may carry a TTL: it
stops applying at `expires_at` by itself, and the worker that probes for the fleet
then prunes it and logs that it expired. Every change writes its audit event (who,
when, why) in the same transaction.

Scopes: `all`, `queue:NAME`, `task:NAME`, `resource:NAME`. Kinds: `pause` (any scope),
`throttle` (a task, refusing `ratio` of its jobs, as freno's throttle-app does) and
`threshold` (a signal's high/low/critical, everywhere or on one resource).
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec
import msgspec.structs
from redis import Redis
from redis.exceptions import WatchError

from easeoff.feedback import keys
from easeoff.feedback.config import Config, Thresholds
from easeoff.feedback.levers import events
from easeoff.feedback.reasons import Kind, Reason, WaitsFor

SWITCHES_KEY = keys.SWITCHES
SCOPE_KINDS = ("queue", "task", "resource")
TASK_SCOPE_PREFIX = keys.TASK_SCOPE_PREFIX  # parked-job scopes of paused tasks share the cool-down namespace
TASK_SCOPES_FIELD = "_task_scopes"  # in the stored JSON: tasks ever paused, whose parked jobs the prober releases


SwitchKind = Literal["pause", "throttle", "threshold"]


class Switch(msgspec.Struct, frozen=True):
    kind: SwitchKind
    scope: str  # all | queue:NAME | task:NAME | resource:NAME | signal NAME[@resource]
    by: str
    why: str
    at: float
    expires_at: float | None = None
    ratio: float | None = None  # throttle: the share of the task's jobs refused
    high: float | None = None  # threshold overrides
    low: float | None = None
    critical: float | None = None
    shadow: bool = False  # a threshold tried on live traffic: judged and counted, holds nothing

    @property
    def key(self) -> str:
        return f"{self.label_kind} {self.scope}"

    @property
    def label_kind(self) -> str:
        """The kind as listed and exported: a shadow threshold sits beside a real one on the same scope."""
        return f"shadow-{self.kind}" if self.shadow else self.kind

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def stale(self, now: float, limit: float) -> bool:
        """On longer than `limit`: the toggle nobody cleaned up."""
        return self.age(now) > limit

    def describe(self) -> str:
        """One line for logs, `status` and the audit trail."""
        detail = ""
        if self.kind == "throttle":
            detail = f" ratio {self.ratio:g}"
        elif self.kind == "threshold":
            detail = f" high {self.high:g} low {self.low:g}" + (
                f" critical {self.critical:g}" if self.critical is not None else ""
            )
        until = f" until {_clock(self.expires_at)}" if self.expires_at is not None else ""
        return f"{self.label_kind} {self.scope}{detail}{until}"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None and v is not False}


class Switches(msgspec.Struct, frozen=True, dict=True):  # dict: room for the memo of `apply`
    entries: Mapping[str, Switch] = msgspec.field(default_factory=dict)
    # Every task scope ever paused: once its pause ends (resume or TTL) the prober releases its
    # parked jobs. Kept in the same value as the switches, so reading it costs no extra command.
    task_scopes: tuple[str, ...] = ()

    @functools.cached_property
    def _applied(self) -> dict[tuple[int, tuple[str, ...]], tuple[Config, Config]]:
        """Configs with live overrides applied, by config and overrides: not a field, so it
        takes no part in equality or repr."""
        return {}

    def live(self, now: float) -> list[Switch]:
        return [s for s in self.entries.values() if s.live(now)]

    def expired(self, now: float) -> list[Switch]:
        return [s for s in self.entries.values() if not s.live(now)]

    def stale(self, now: float, limit: float) -> list[Switch]:
        """Live switches on longer than `limit`, oldest first."""
        return sorted((s for s in self.live(now) if s.stale(now, limit)), key=lambda s: s.at)

    def shadow_thresholds(self, now: float) -> list[Switch]:
        return [s for s in self.live(now) if s.kind == "threshold" and s.shadow]

    def paused(self, scope: str, now: float) -> Reason | None:
        """The reason `scope` (`all`, `queue:q`, ...) is paused, else None. A paused task's jobs
        wait for the task to resume; anything else paused holds the jobs' resources."""
        found = self.entries.get(f"pause {scope}")
        if found is None or not found.live(now):
            return None
        waits_for: WaitsFor = "task" if found.scope.startswith(TASK_SCOPE_PREFIX) else "resources"
        return Reason(Kind.PAUSED, found.scope, detail=f"{found.by}: {found.why}", waits_for=waits_for)

    def throttled(self, task: str, now: float, rng: random.Random) -> Reason | None:
        """A reason to refuse this one job of `task`, drawn with the throttle's ratio; the job
        just comes back after its delay (a throttle says nothing about the database)."""
        found = self.entries.get(f"throttle {TASK_SCOPE_PREFIX}{task}")
        if found is None or not found.live(now) or rng.random() >= (found.ratio or 0.0):
            return None
        return Reason(
            Kind.THROTTLED, found.scope, value=found.ratio, detail=f"{found.by}: {found.why}", waits_for="delay"
        )

    def apply(self, config: Config, now: float) -> Config:
        """The config with live threshold overrides in force; the same object when there are none.

        Worked out once per snapshot and set of live overrides: one gate call judges many
        resources, hosts and signals, and each layer asks for the effective config."""
        overrides = [s for s in self.live(now) if s.kind == "threshold" and not s.shadow]
        if not overrides:
            return config
        key = (id(config), tuple(sorted(s.scope for s in overrides)))
        cached = self._applied.get(key)
        if cached is None or cached[0] is not config:  # the same config object, not a reused id
            cached = self._applied[key] = (config, self._apply(config, overrides))
        return cached[1]

    def with_shadow_enforced(self, now: float) -> Switches:
        """These switches as the shadow world has them: each shadow threshold in force in place
        of any real one on its scope."""
        entries = {k: s for k, s in self.entries.items() if not s.shadow}
        for s in self.shadow_thresholds(now):
            enforced = msgspec.structs.replace(s, shadow=False)
            entries[enforced.key] = enforced
        return Switches(entries, self.task_scopes)

    def apply_shadow(self, config: Config, now: float) -> Config:
        """The config as the shadow thresholds would have it: the real overrides, the shadow ones over them."""
        real = self.apply(config, now)
        shadows = self.shadow_thresholds(now)
        return self._apply(real, shadows) if shadows else real

    def _apply(self, config: Config, overrides: list[Switch]) -> Config:
        signals = dict(config.signals)
        resources = dict(config.resources)
        # Fleet-wide overrides first, so one aimed at a resource wins there. An override
        # without `critical` keeps the critical tier already in force.
        for s in sorted(overrides, key=lambda s: "@" in s.scope):
            name, _, resource = s.scope.partition("@")
            if name not in signals or (resource and resource not in resources):
                continue
            if not resource:
                signal = signals[name]
                critical = signal.critical if s.critical is None else s.critical
                signals[name] = msgspec.structs.replace(signal, high=s.high or 0.0, low=s.low or 0.0, critical=critical)
                for rname, r in resources.items():
                    if name in r.overrides:
                        limits = _limits(s, r.overrides[name].critical)
                        resources[rname] = msgspec.structs.replace(r, overrides={**r.overrides, name: limits})
            else:
                r = resources[resource]
                inherited = r.overrides[name].critical if name in r.overrides else signals[name].critical
                r_overrides = {**r.overrides, name: _limits(s, inherited)}
                resources[resource] = msgspec.structs.replace(r, overrides=r_overrides)
        return msgspec.structs.replace(config, signals=signals, resources=resources)


def _limits(switch: Switch, critical: float | None) -> Thresholds:
    return Thresholds(switch.high or 0.0, switch.low or 0.0, critical if switch.critical is None else switch.critical)


def parse_switches(raw: bytes | str | None) -> Switches:
    """The stored JSON → Switches; anything unreadable is ignored rather than trusted."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return Switches()
    if not isinstance(data, dict):
        return Switches()
    entries = {}
    for name, value in data.items():
        if name.startswith("_") or not isinstance(value, dict):
            continue
        try:
            switch = Switch(**value)
        except TypeError:
            continue
        entries[switch.key] = switch
    scopes = data.get(TASK_SCOPES_FIELD)
    task_scopes = tuple(str(s) for s in scopes) if isinstance(scopes, list) else ()
    return Switches(entries, task_scopes)


def read_switches(redis: Redis) -> Switches:
    return parse_switches(redis.get(SWITCHES_KEY))


def set_switch(redis: Redis, switch: Switch) -> None:
    """Turn a switch on (or replace it), with its audit event, in one transaction."""

    def change(entries: dict[str, Switch]) -> tuple[str, str] | None:
        entries[switch.key] = switch
        return f"on: {switch.describe()}", switch.why

    _update(redis, change, switch.by, task_scope=_task_scope(switch))


def clear_switch(redis: Redis, key: str, by: str, why: str = "") -> Switch | None:
    """Turn a switch off; returns what it was, or None if it was not on (nothing is logged then)."""
    removed: list[Switch] = []

    def change(entries: dict[str, Switch]) -> tuple[str, str] | None:
        gone = entries.pop(key, None)
        if gone is None:
            return None
        removed.append(gone)
        return f"off: {gone.describe()}", why

    _update(redis, change, by)
    return removed[-1] if removed else None


def prune_expired(redis: Redis, now: float) -> list[Switch]:
    """Drop switches whose TTL has run out, logging each once (whoever prunes first)."""
    pruned: list[Switch] = []

    def change(entries: dict[str, Switch]) -> tuple[str, str] | None:
        pruned.clear()
        pruned.extend(s for s in entries.values() if not s.live(now))
        for s in pruned:
            del entries[s.key]
        if not pruned:
            return None
        return "expired: " + "; ".join(s.describe() for s in pruned), "TTL ran out"

    _update(redis, change, "easeoff")
    return pruned


def paused_task_scopes(switches: Switches, now: float) -> dict[str, Reason]:
    """Cool-down scope (`task:NAME`) → reason, for every task paused now."""
    found = {}
    for s in switches.live(now):
        reason = switches.paused(s.scope, now) if s.kind == "pause" else None
        if reason is not None and s.scope.startswith(TASK_SCOPE_PREFIX):
            found[s.scope] = reason
    return found


def _task_scope(switch: Switch) -> str | None:
    return switch.scope if switch.kind == "pause" and switch.scope.startswith(TASK_SCOPE_PREFIX) else None


def _update(
    redis: Redis,
    change: Callable[[dict[str, Switch]], tuple[str, str] | None],
    by: str,
    task_scope: str | None = None,
) -> None:
    """Read-modify-write under WATCH, the audit event in the same MULTI: two operators never
    lose each other's change, and no change goes unlogged."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(SWITCHES_KEY)
                stored = parse_switches(pipe.get(SWITCHES_KEY))
                entries = dict(stored.entries)
                logged = change(entries)
                if logged is None:
                    pipe.unwatch()
                    return
                scopes = sorted({*stored.task_scopes, *([task_scope] if task_scope else [])})
                value: dict[str, Any] = {k: s.as_dict() for k, s in entries.items()}
                if scopes:
                    value[TASK_SCOPES_FIELD] = scopes
                pipe.multi()
                pipe.set(SWITCHES_KEY, json.dumps(value, sort_keys=True))
                text, why = logged
                events.record(pipe, "switch", text, who=by, why=why)
                pipe.publish(keys.WAKE, "switches")  # idle workers look again now, not at their next look-in
                pipe.execute()
                return
            except WatchError:
                continue


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
