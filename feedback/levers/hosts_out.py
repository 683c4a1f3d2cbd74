"""Ops mark a host out of production (and back in); a pair with a half out holds its shard.

The set is one JSON value, so every worker reads it in the same MGET as the readings.
Each change is logged as an event (who, when, why) in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from easeoff.feedback import clock, keys
from easeoff.feedback.levers import events

HOSTS_OUT_KEY = keys.HOSTS_OUT


def mark_out(redis: Redis, host: str, reason: str, by: str | None = None) -> None:
    who = by or events.operator()
    entry: dict[str, Any] = {"reason": reason, "by": who, "at": clock.now()}
    _update(redis, lambda hosts: hosts.__setitem__(host, entry), f"host out: {host}", who, reason)


def mark_in(redis: Redis, host: str, by: str | None = None, why: str = "") -> bool:
    """True if the host was out."""
    was_out: list[bool] = []
    _update(redis, lambda hosts: was_out.append(hosts.pop(host, None) is not None), f"host in: {host}", by, why)
    return was_out[-1]


def parse_hosts_out(raw: bytes | str | None) -> dict[str, str]:
    """host → its reason, from the stored JSON."""
    return {host: str(entry.get("reason") or "marked out") for host, entry in _load(raw).items()}


def _load(raw: bytes | str | None) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _update(
    redis: Redis, change: Callable[[dict[str, dict[str, Any]]], object], text: str, by: str | None, why: str
) -> None:
    """Read-modify-write under WATCH, so two operators never lose each other's change; the
    audit event lands in the same transaction."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(HOSTS_OUT_KEY)
                hosts = _load(pipe.get(HOSTS_OUT_KEY))
                change(hosts)
                pipe.multi()
                pipe.set(HOSTS_OUT_KEY, json.dumps(hosts, sort_keys=True))
                events.record(pipe, "host", text, who=by or events.operator(), why=why)
                pipe.publish(keys.WAKE, "hosts")  # idle workers look again now, not at their next look-in
                pipe.execute()
                return
            except WatchError:
                continue
