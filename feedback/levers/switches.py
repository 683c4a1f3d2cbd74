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

What this version cannot fully read is never dropped (fail closed, loudly; a rolling deploy
runs two versions side by side):
- an entry with fields this version does not know still applies, those fields ignored, and
  they are kept as they are when any other switch changes;
- an entry it cannot understand at all (not an object, a kind it does not know, a required
  field missing or of the wrong type) holds the scope its key names — `pause task:x` holds
  task:x, `threshold lag@shard:1` holds resource:shard:1, a key naming no scope holds
  everything — with the reason `switch_unreadable:KEY`, jobs coming back after their delay;
  `easeoff resume` (or `easeoff threshold --clear`, `unthrottle`) on the same key removes it;
- a value that is not a JSON object at all holds everything (`switch_unreadable:easeoff:switches`)
  until an operator's next change replaces it (its text kept in that change's audit event).
Each is logged as a warning once per process.
"""

from __future__ import annotations

import functools
import json
import logging
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
from easeoff.feedback.scopes import Scope, ScopeKind

log = logging.getLogger(__name__)

SWITCHES_KEY = keys.SWITCHES
TASK_SCOPES_FIELD = "_task_scopes"  # in the stored JSON: tasks ever paused, whose parked jobs the prober releases


SwitchKind = Literal["pause", "throttle", "threshold"]


def switch_key(label_kind: str, scope: Scope) -> str:
    """A switch's entry in the stored JSON (`pause task:x`, `shadow-threshold lag@shard:1`)."""
    return f"{label_kind} {scope}"


class Switch(msgspec.Struct, frozen=True):
    kind: SwitchKind
    scope: str  # as stored: all | queue:NAME | task:NAME | resource:NAME | for a threshold, SIGNAL[@RESOURCE]
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
        return switch_key(self.label_kind, self.target)

    @property
    def target(self) -> Scope:
        """Its scope, typed (parse_switches holds any switch whose scope does not parse)."""
        return Scope.parse(self.scope, signal=self.kind == "threshold")

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
    # Scope held → the stored key this version could not read (SWITCHES_KEY: the whole value).
    unreadable: Mapping[str, str] = msgspec.field(default_factory=dict)

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

    def paused(self, scope: Scope, now: float) -> Reason | None:
        """The reason `scope` is paused, else None. A paused task's jobs wait for the task to
        resume; anything else paused holds the jobs' resources."""
        found = self.entries.get(switch_key("pause", scope))
        if found is None or not found.live(now):
            key = self.unreadable.get(str(scope))
            if key is None:
                return None
            detail = "not understood by this easeoff: held until fixed or cleared"
            return Reason(Kind.SWITCH_UNREADABLE, key, detail=detail, waits_for="delay")
        waits_for: WaitsFor = "task" if scope.kind == ScopeKind.TASK else "resources"
        return Reason(Kind.PAUSED, found.scope, detail=f"{found.by}: {found.why}", waits_for=waits_for)

    def throttled(self, task: str, now: float, rng: random.Random) -> Reason | None:
        """A reason to refuse this one job of `task`, drawn with the throttle's ratio; the job
        just comes back after its delay (a throttle says nothing about the database)."""
        found = self.entries.get(switch_key("throttle", Scope.task(task)))
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
        return Switches(entries, self.task_scopes, self.unreadable)

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
        for s in sorted(overrides, key=lambda s: bool(s.target.resource)):
            name, resource = s.target.name, s.target.resource
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
    """The stored JSON → Switches: unknown fields ignored, what cannot be read at all held."""
    data = _stored_object(raw)
    if data is None:
        _warn_once(SWITCHES_KEY, "is not a JSON object: holding everything until it is replaced")
        return Switches(unreadable={"all": SWITCHES_KEY})
    entries: dict[str, Switch] = {}
    unreadable: dict[str, str] = {}
    for name, value in data.items():
        if name.startswith("_"):
            continue
        try:
            switch = msgspec.convert(value, Switch)  # fields this version does not know are ignored
            switch.target  # noqa: B018 - a scope that does not parse is an entry this version cannot read
        except (msgspec.ValidationError, ValueError) as exc:
            scope = _scope_named(name)
            _warn_once(name, f"cannot be read ({exc}): holding {scope}")
            unreadable.setdefault(scope, name)
            continue
        entries[switch.key] = switch
    scopes = data.get(TASK_SCOPES_FIELD)
    task_scopes = tuple(str(s) for s in scopes) if isinstance(scopes, list) else ()
    return Switches(entries, task_scopes, unreadable)


def _stored_object(raw: bytes | str | None) -> dict[str, Any] | None:
    """The stored value as a JSON object (empty when there is none), or None when it is not one."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _scope_named(key: str) -> str:
    """The scope an entry's key names (`pause queue:q` → `queue:q`, `threshold lag@shard:1` →
    `resource:shard:1`), else `all`: what an entry this version cannot read holds."""
    label, _, text = key.partition(" ")
    try:
        return str(Scope.parse(text, signal=label.endswith("threshold")).held)
    except ValueError:
        return str(Scope.everything())


_warned: set[tuple[str, str]] = set()


def _warn_once(key: str, problem: str) -> None:
    """Every worker parses the switches on every look at the gate: say each problem once per process."""
    if (key, problem) not in _warned:
        _warned.add((key, problem))
        log.warning("switch %r %s", key, problem)


def read_switches(redis: Redis) -> Switches:
    return parse_switches(redis.get(SWITCHES_KEY))


def set_switch(redis: Redis, switch: Switch) -> None:
    """Turn a switch on (or replace it), with its audit event, in one transaction."""

    def change(entries: dict[str, Switch], unread: dict[str, Any]) -> tuple[str, str] | None:
        entries[switch.key] = switch
        unread.pop(switch.key, None)  # replaced by one this version can read
        return f"on: {switch.describe()}", switch.why

    _update(redis, change, switch.by, task_scope=_task_scope(switch))


def clear_switch(redis: Redis, key: str, by: str, why: str = "") -> Switch | None:
    """Turn a switch off; returns what it was, or None if it was not on (nothing is logged then)."""
    removed: list[Switch] = []

    def change(entries: dict[str, Switch], unread: dict[str, Any]) -> tuple[str, str] | None:
        gone = entries.pop(key, None)
        if gone is None:
            if unread.pop(key, None) is None:
                return None
            return f"off: unreadable switch {key}", why
        removed.append(gone)
        return f"off: {gone.describe()}", why

    _update(redis, change, by)
    return removed[-1] if removed else None


def prune_expired(redis: Redis, now: float) -> list[Switch]:
    """Drop switches whose TTL has run out, logging each once (whoever prunes first)."""
    pruned: list[Switch] = []

    def change(entries: dict[str, Switch], unread: dict[str, Any]) -> tuple[str, str] | None:
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
        if s.kind == "pause" and s.target.kind == ScopeKind.TASK:
            reason = switches.paused(s.target, now)
            if reason is not None:
                found[s.scope] = reason
    return found


def _task_scope(switch: Switch) -> str | None:
    return switch.scope if switch.kind == "pause" and switch.target.kind == ScopeKind.TASK else None


def _update(
    redis: Redis,
    change: Callable[[dict[str, Switch], dict[str, Any]], tuple[str, str] | None],
    by: str,
    task_scope: str | None = None,
) -> None:
    """Read-modify-write under WATCH, the audit event in the same MULTI: two operators never
    lose each other's change, and no change goes unlogged. `change` gets the readable switches
    and the raw entries this version cannot read; every entry it leaves alone is written back
    as stored, fields this version does not know included."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(SWITCHES_KEY)
                raw = pipe.get(SWITCHES_KEY)
                data = _stored_object(raw)
                stored = parse_switches(raw)
                entries = dict(stored.entries)
                unread = {k: v for k, v in (data or {}).items() if not k.startswith("_") and k not in entries}
                logged = change(entries, unread)
                if logged is None:
                    pipe.unwatch()
                    return
                value: dict[str, Any] = {k: v for k, v in (data or {}).items() if k in unread or k.startswith("_")}
                for k, s in entries.items():
                    value[k] = data[k] if data and stored.entries.get(k) is s and k in data else s.as_dict()
                scopes = sorted({*stored.task_scopes, *([task_scope] if task_scope else [])})
                if scopes:
                    value[TASK_SCOPES_FIELD] = scopes
                text, why = logged
                if data is None:
                    text += f"; replaced an unreadable value: {_text(raw)[:200]!r}"
                pipe.multi()
                pipe.set(SWITCHES_KEY, json.dumps(value, sort_keys=True))
                events.record(pipe, "switch", text, who=by, why=why)
                pipe.publish(keys.WAKE, "switches")  # idle workers look again now, not at their next look-in
                pipe.execute()
                return
            except WatchError:
                continue


def _text(raw: bytes | str | None) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
