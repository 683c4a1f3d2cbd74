"""Verdict flips as events: a resource (or the whole fleet) held, or admitted again.

The worker that probed for the fleet reports every resource's verdict once per interval;
one Lua script compares each with the last one recorded and logs only the changes, so
two probers racing never log the same flip twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from redis import Redis

from feedback.events import EVENT_COUNTS_KEY, EVENTS_KEY, MAX_EVENTS

VERDICTS_KEY = "easeoff:verdicts"  # resource (or "global") → "held" | "admit", as last logged
GLOBAL = "global"

FLIPS = """
-- KEYS: verdicts hash, events stream, event counts
-- ARGV: now, stream maxlen, then triples: scope, state, event text
local flipped = 0
for i = 3, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    if old or ARGV[i + 1] == 'held' then  -- the first sight of a healthy scope is no flip
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'at', ARGV[1], 'kind', 'verdict',
                 'text', ARGV[i + 2], 'who', 'easeoff', 'why', '')
      redis.call('HINCRBY', KEYS[3], 'verdict', 1)
      flipped = flipped + 1
    end
  end
end
return flipped
"""


def record_flips(
    redis: Redis, held: Mapping[str, Sequence[str]], scopes: Sequence[str], now: float | None = None
) -> int:
    """`held`: scope → reasons for every scope held now; `scopes`: every scope judged. Returns flips logged."""
    args: list[str] = []
    for scope in scopes:
        reasons = held.get(scope)
        text = f"{scope} held: {'; '.join(reasons)}"[:500] if reasons else f"{scope} admitted again"
        args += [scope, "held" if reasons else "admit", text]
    if not args:
        return 0
    now = time.time() if now is None else now
    return int(redis.eval(FLIPS, 3, VERDICTS_KEY, EVENTS_KEY, EVENT_COUNTS_KEY, repr(now), MAX_EVENTS, *args))


def last_verdicts(redis: Redis) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(VERDICTS_KEY).items()}
