"""Per-resource cool-down: while a resource is strained, its deferred jobs stay parked.

Without it, workers would spin through the queue deferring the same jobs again and
again (sidekiq-throttled's lesson). The worker that refreshed the readings — one
per interval for the whole fleet — marks each strained resource cooling with a key
that expires on its own if nobody refreshes it; due deferred jobs whose resources
are cooling are re-parked inside the promotion script — until the resource clears
or their deferral cap ends, not on a timer — instead of being dequeued. When a
resource is healthy again, its parked jobs are released at once: fast resume.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence

from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.config import Config
from easeoff.feedback.reasons import Reason, joined
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import resource_findings

cooldown_key = keys.cooldown_key
parked_key = keys.parked_key  # a secondary index (`job_id|queue` → due) of the deferred jobs waiting on a scope


def cooldown_ttl(config: Config) -> float:
    """Long enough to span a few refreshes, short enough to lapse if the fleet stops probing."""
    return max(config.stale_after, 3 * config.probe_interval)


def strained_resources(config: Config, snapshot: Snapshot, now: float) -> dict[str, list[Reason]]:
    """resource → its reasons, for every resource that is strained now (global traffic aside)."""
    found = {}
    for name, resource in config.resources.items():
        reasons = resource_findings(resource, snapshot, config, now).reasons
        if reasons:
            found[name] = list(reasons)
    return found


def publish(
    redis: Redis,
    config: Config,
    strained: Mapping[str, Sequence[Reason]],
    extra_scopes: Iterable[str] = (),
    only: Collection[str] | None = None,
) -> list[str]:
    """Mark strained scopes cooling and clear the rest; return the healthy scopes that still
    have parked jobs (however their cool-down ended), for the caller to release.

    Scopes are the configured resources plus `extra_scopes` (paused tasks' `task:NAME`), or
    just those of them in `only`."""
    ttl_ms = int(cooldown_ttl(config) * 1000)
    names = [n for n in dict.fromkeys([*config.resources, *strained, *extra_scopes]) if only is None or n in only]
    if not names:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            if name in strained:
                pipe.set(cooldown_key(name), joined(strained[name])[:500], px=ttl_ms)
            else:
                pipe.delete(cooldown_key(name))
                pipe.exists(parked_key(name))
        results = iter(pipe.execute())
    to_release = []
    for name in names:
        next(results)
        if name not in strained and next(results):
            to_release.append(name)
    return to_release


class CooldownPublisher:
    """`publish` for the process that probes, sending Redis only what changed since its last
    round: a strained scope's key when its reasons change or a third of its TTL has passed, a
    healthy scope's clear-and-look when it clears, and every healthy scope's again at least
    every `recheck` seconds (for jobs parked on it by a promotion that raced its clearing, or
    another prober's verdict). At 300 resources and a quarter-second interval, publishing them
    all every round was 2,400 commands a second."""

    def __init__(self, redis: Redis, config: Config, recheck: float = 1.0) -> None:
        self.redis, self.config, self.recheck = redis, config, recheck
        self._sent: dict[str, tuple[str | None, float]] = {}  # scope → (its reasons, or None if healthy; when)

    def publish(self, strained: Mapping[str, Sequence[Reason]], extra_scopes: Iterable[str] = ()) -> list[str]:
        now = time.monotonic()
        scopes = list(dict.fromkeys([*self.config.resources, *strained, *extra_scopes]))
        texts = {name: joined(strained[name])[:500] if name in strained else None for name in scopes}
        due = {name for name in scopes if self._due(name, texts[name], now)}
        released = publish(self.redis, self.config, strained, extra_scopes, only=due)
        for name in due:
            self._sent[name] = (texts[name], now)
        return released

    def _due(self, scope: str, text: str | None, now: float) -> bool:
        if scope not in self._sent:
            return True
        sent, at = self._sent[scope]
        if sent != text:
            return True
        return now - at >= (cooldown_ttl(self.config) / 3 if text is not None else self.recheck)
