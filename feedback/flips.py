"""Verdict flips as events: a resource (or the whole fleet) held, or admitted again.

The worker that probed for the fleet reports every resource's verdict once per interval;
one Lua script compares the whole state with the last one recorded (a single GET while
nothing changes) and logs only the changes, so two probers racing never log a flip twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from redis import Redis

from easeoff.feedback.events import EVENT_COUNTS_KEY, EVENTS_KEY, MAX_EVENTS

VERDICTS_KEY = "easeoff:verdicts"  # JSON: scope (a resource, or "global") → "held" | "admit", as last logged
GLOBAL = "global"

FLIPS = """
-- KEYS: verdicts (JSON), events stream, event counts
-- ARGV: now, stream maxlen, the new state (JSON), then pairs: scope, event text
-- One GET while nothing changes (every interval, fleet-wide); the events only when it does.
local stored = redis.call('GET', KEYS[1])
if stored == ARGV[3] then return 0 end
local old = stored and cjson.decode(stored) or {}
local new = cjson.decode(ARGV[3])
local flipped = 0
for i = 4, #ARGV, 2 do
  local scope = ARGV[i]
  if old[scope] ~= new[scope] and (old[scope] or new[scope] == 'held') then  -- a healthy first sight is no flip
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'at', ARGV[1], 'kind', 'verdict',
               'text', ARGV[i + 1], 'who', 'easeoff', 'why', '')
    redis.call('HINCRBY', KEYS[3], 'verdict', 1)
    flipped = flipped + 1
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return flipped
"""


def record_flips(
    redis: Redis, held: Mapping[str, Sequence[str]], scopes: Sequence[str], now: float | None = None
) -> int:
    """`held`: scope → reasons for every scope held now; `scopes`: every scope judged. Returns flips logged."""
    if not scopes:
        return 0
    state = {scope: "held" if held.get(scope) else "admit" for scope in scopes}
    args: list[str] = []
    for scope in scopes:
        reasons = held.get(scope)
        args += [scope, f"{scope} held: {'; '.join(reasons)}"[:500] if reasons else f"{scope} admitted again"]
    now = time.time() if now is None else now
    script = redis.register_script(FLIPS)
    state_json = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return int(
        script(keys=[VERDICTS_KEY, EVENTS_KEY, EVENT_COUNTS_KEY], args=[repr(now), MAX_EVENTS, state_json, *args])
    )
