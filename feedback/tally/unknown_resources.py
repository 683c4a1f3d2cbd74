"""Resources jobs name that the config does not declare: seen by workers, shown to operators.

During a deploy, an app may enqueue on `shard:9` before every worker's config knows it.
The gate fails closed (`unknown_resource:shard:9`), the job waits out a short grace and
then fails with that reason; meanwhile `status`, `probe`, the exporter and the page name
the resource, so the hold is never silent. Workers record each sighting here.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import msgspec
from redis import Redis

from easeoff.feedback import keys

KEY = keys.UNKNOWN_RESOURCES
KEEP_FOR = 86400  # the record lapses a day after the last sighting


class UnknownResource(msgspec.Struct, frozen=True):
    name: str
    task: str
    last_seen: float

    def reason(self, now: float, grace: float) -> str:
        return (
            f"unknown_resource:{self.name} (not in the config; job of {self.task} seen "
            f"{max(0.0, now - self.last_seen):.0f}s ago; such jobs fail after {grace:g}s)"
        )


def note(pipe: Any, resources: Iterable[str], task: str, now: float) -> None:
    """Record a sighting, in the caller's pipeline (the job's deferral)."""
    for resource in resources:
        pipe.hset(KEY, resource, json.dumps({"task": task, "at": now}))
    pipe.expire(KEY, KEEP_FOR)


def read(redis: Redis, declared: Collection[str]) -> list[UnknownResource]:
    """Sightings of resources still missing from `declared` (a deploy that caught up drops them)."""
    return parse(redis.hgetall(KEY), declared)


def parse(stored: Mapping[Any, Any], declared: Collection[str]) -> list[UnknownResource]:
    """The sightings in `stored` (the hash at KEY, read in a caller's pipeline), as `read` gives them."""
    found = []
    for raw_name, raw in sorted(stored.items()):
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        if name in declared:
            continue
        try:
            entry = json.loads(raw)
            found.append(UnknownResource(name, str(entry["task"]), float(entry["at"])))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged record says nothing worth showing
    return found
