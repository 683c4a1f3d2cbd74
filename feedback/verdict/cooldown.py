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

from collections.abc import Iterable, Mapping, Sequence

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
    redis: Redis, config: Config, strained: Mapping[str, Sequence[Reason]], extra_scopes: Iterable[str] = ()
) -> list[str]:
    """Mark strained scopes cooling and clear the rest; return the healthy scopes that still
    have parked jobs (however their cool-down ended), for the caller to release.

    Scopes are the configured resources plus `extra_scopes` (paused tasks' `task:NAME`)."""
    ttl_ms = int(cooldown_ttl(config) * 1000)
    names = list(dict.fromkeys([*config.resources, *strained, *extra_scopes]))
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
