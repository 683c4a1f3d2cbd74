"""Ops mark a host out of production (and back in); a pair with a half out holds its shard.

The set is one JSON value, so every worker reads it in the same MGET as the readings.
Each change is logged as an event (who, when, why) in the same transaction.

What this version cannot fully read is never dropped (a rolling deploy runs two versions):
an entry's presence is what marks its host out, so an entry with fields this version does not
know, or one it cannot read at all (not an object), still marks its host out (the latter with
a reason that says so), and every entry is written back as stored when another host changes.
A value that is not a JSON object at all holds everything (`hosts_out_unreadable`, the gate)
until an operator's next change replaces it, its text kept in that change's audit event.
Each is logged as a warning once per process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from easeoff.feedback import clock, keys
from easeoff.feedback.levers import events

log = logging.getLogger(__name__)

HOSTS_OUT_KEY = keys.HOSTS_OUT
UNREADABLE_ENTRY = "entry not understood by this easeoff: held out"


class HostsOut(dict[str, str]):
    """host → why it is out; `unreadable` is true when the stored value was not a JSON object
    (nothing is known about which hosts are out: the gate holds everything)."""

    unreadable: bool = False


def mark_out(redis: Redis, host: str, reason: str, by: str | None = None) -> None:
    who = by or events.operator()
    entry: dict[str, Any] = {"reason": reason, "by": who, "at": clock.now()}
    _update(redis, lambda hosts: hosts.__setitem__(host, entry), f"host out: {host}", who, reason)


def mark_in(redis: Redis, host: str, by: str | None = None, why: str = "") -> bool:
    """True if the host was out."""
    was_out: list[bool] = []
    _update(redis, lambda hosts: was_out.append(hosts.pop(host, None) is not None), f"host in: {host}", by, why)
    return was_out[-1]


def parse_hosts_out(raw: bytes | str | None) -> HostsOut:
    """host → its reason, from the stored JSON (see the module's note on what cannot be read)."""
    data = _load(raw)
    found = HostsOut()
    if data is None:
        _warn_once(HOSTS_OUT_KEY, "is not a JSON object: holding everything until it is replaced")
        found.unreadable = True
        return found
    for host, entry in data.items():
        if isinstance(entry, dict):
            found[host] = str(entry.get("reason") or "marked out")
        else:
            _warn_once(host, "cannot be read: the host is held out")
            found[host] = UNREADABLE_ENTRY
    return found


def _load(raw: bytes | str | None) -> dict[str, Any] | None:
    """The stored JSON object, every entry as stored; None when the value is not one."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return None
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else None


_warned: set[tuple[str, str]] = set()


def _warn_once(key: str, problem: str) -> None:
    """Every worker parses this on every look at the gate: say each problem once per process."""
    if (key, problem) not in _warned:
        _warned.add((key, problem))
        log.warning("hosts-out %r %s", key, problem)


def _update(redis: Redis, change: Callable[[dict[str, Any]], object], text: str, by: str | None, why: str) -> None:
    """Read-modify-write under WATCH, so two operators never lose each other's change; the
    audit event lands in the same transaction."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(HOSTS_OUT_KEY)
                raw = pipe.get(HOSTS_OUT_KEY)
                hosts = _load(raw)
                logged = text
                if hosts is None:
                    hosts = {}
                    shown = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                    logged += f"; replaced an unreadable value: {shown[:200]!r}"
                change(hosts)
                pipe.multi()
                pipe.set(HOSTS_OUT_KEY, json.dumps(hosts, sort_keys=True))
                events.record(pipe, "host", logged, who=by or events.operator(), why=why)
                pipe.publish(keys.WAKE, "hosts")  # idle workers look again now, not at their next look-in
                pipe.execute()
                return
            except WatchError:
                continue
