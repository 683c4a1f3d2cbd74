"""How long an owner may stay silent before what it holds counts as abandoned.

A running job's started entry and its concurrency leases carry the Redis time by which their
owner (the execution that claimed the job) must beat again: a beat every `beat_every` seconds,
`GRACE` seconds of slack. They are renewed together, by one script, on Redis's clock, so a
lease lives exactly as long as its job (workers/lua/heartbeat.lua). After a silence of Redis
itself longer than `SILENCE_GAP`, nothing is judged absent for `GRACE` seconds
(feedback/lua/fleet_clock.lua): an entry that lapsed while nobody could reach Redis proves
nothing about its owner.
"""

from __future__ import annotations

import math

from easeoff.feedback.config import Config

GRACE = 10.0  # seconds an owner's beat may be late before what it holds counts as abandoned
# A silence of the whole fleet longer than this (no beat, claim or sweep reached Redis) is an
# outage: shorter than any owner's TTL (at least 1 + GRACE), so no entry lapses unnoticed.
SILENCE_GAP = 5.0


def beat_every(config: Config) -> int:
    """Seconds between an owner's beats: once a probe interval, whole seconds as rq's monitor takes them."""
    return max(1, math.ceil(config.probe_interval))


def owner_ttl(config: Config) -> float:
    """How long a started entry or a lease lives past its owner's last beat."""
    return beat_every(config) + GRACE
