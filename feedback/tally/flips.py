"""Verdict flips as events: a resource (or the whole fleet) held, or admitted again.

The worker that probed for the fleet reports every resource's verdict once per interval;
one Lua script compares the whole state with the last one recorded (a single GET while
nothing changes) and logs only the changes, so two probers racing never log a flip twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from redis import Redis

from easeoff.feedback import clock, keys
from easeoff.feedback.levers.events import MAX_EVENTS
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.reasons import Reason, joined

GLOBAL = "global"

FLIPS = LuaScript.load("easeoff.feedback", "flips", argv=("now", "maxlen", "state"))


def record_flips(
    redis: Redis, held: Mapping[str, Sequence[Reason]], scopes: Sequence[str], now: float | None = None
) -> int:
    """`held`: scope → reasons for every scope held now; `scopes`: every scope judged. Returns flips logged."""
    if not scopes:
        return 0
    state = {scope: "held" if held.get(scope) else "admit" for scope in scopes}
    args: list[str] = []
    for scope in scopes:
        reasons = held.get(scope)
        args += [scope, f"{scope} held: {joined(reasons)}"[:500] if reasons else f"{scope} admitted again"]
    now = clock.now() if now is None else now
    state_json = json.dumps(state, sort_keys=True, separators=(",", ":"))
    script_args = FLIPS.args(args, now=repr(now), maxlen=MAX_EVENTS, state=state_json)
    return int(FLIPS.register(redis)(keys=[keys.VERDICTS, keys.EVENTS, keys.EVENT_COUNTS], args=script_args))
