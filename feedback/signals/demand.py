"""Probing follows demand: a host no job wants is probed every few seconds, not every interval.

An idle fleet over many hosts otherwise reads every host at full pace all day, for nothing
(Vitess's tablet throttler goes "dormant" after a minute without checks, and slows its
probes from 250 ms to 5 s). A host is *in demand* while a job that touches one of its
resources waits or runs. What says so, fleet-wide, in keys that already exist or cost one
write a second:

- each admission check of a job touches `easeoff:wanted:{resource}` for its resources
  (SET PX `probe.dormant_after`), at most once a second per process and resource (`Wants`);
- jobs parked on the resource (strained, or waiting for a slot) keep it wanted, and so do
  slots held on it (its running jobs, where it has a concurrency limit);
- jobs queued in, or running from, a queue that declares the resource.

The prober learns it in the store of each reading (store_reading.lua checks these keys): no
round trip of its own. A reading taken while nothing wanted its host says so
(`Reading.dormant`); the next comes `probe.dormant_interval` later. The first job that
finds a dormant reading wakes the prober (the fleet's wake-up word) and waits for one fresh
probe before it is judged: it is never admitted on a reading taken at the dormant pace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping

from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from easeoff.feedback import keys
from easeoff.feedback.config import Config
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.signals.readings import Reading

TOUCH_EVERY = 1.0  # seconds: a process renews a resource's wanted key at most this often
WAKE_WORD = "demand"  # published on keys.WAKE by the first job that finds its host dormant
FRESH_POLL = 0.01  # seconds between looks for the fresh reading a woken prober stores


def follows_demand(config: Config) -> bool:
    """Off (today's pace everywhere) when the dormant interval is the interval itself."""
    return config.probe_dormant_interval > config.probe_interval


def demand_keys(config: Config) -> dict[str, tuple[str, ...]]:
    """Per probe target, the keys any of which, present, say a job wants it. A target with none
    (a traffic source, a host no resource names, or demand-following off) is always wanted."""
    if not follows_demand(config):
        return {}
    by_resource: dict[str, list[str]] = {}
    for name in config.resources:
        by_resource[name] = [
            keys.WANTED.format(resource=name),
            keys.leases_key(name),
            *(keys.parked_key(prefix + name) for prefix in ("", keys.SLOT_PARK_PREFIX, keys.SLOT_LOW_PARK_PREFIX)),
        ]
    for queue in config.queues.values():
        queue_keys = [
            Queue.redis_queue_namespace_prefix + queue.name,
            StartedJobRegistry.key_template.format(queue.name),
        ]
        for name in queue.resources:
            by_resource.setdefault(name, []).extend(queue_keys)
    found: dict[str, tuple[str, ...]] = {}
    for name, resource in config.resources.items():
        for host in resource.hosts:
            found[host] = tuple(dict.fromkeys([*found.get(host, ()), *by_resource[name]]))
    # A budget measured on its hosts learns its baseline while nothing runs there, from a window
    # of readings at full pace (a canary burst is sized for the interval, not the dormant pace):
    # its hosts are always wanted.
    for resource in config.resources.values():
        if resource.budget is not None and resource.budget.read_on_hosts:
            for host in resource.hosts:
                found.pop(host, None)
    return found


def dormant_pace(config: Config) -> float:
    return max(config.probe_dormant_interval, config.probe_interval)


def pace_of(reading: Reading, config: Config) -> float:
    """Seconds from this reading to the next its prober promises."""
    return dormant_pace(config) if reading.dormant else config.probe_interval


class Wants:
    """One process's marks that jobs want resources: the admission check calls `want` for every
    job; it writes at most once a second per resource, and at once (with the wake-up word)
    when the job's hosts were read at the dormant pace."""

    def __init__(self, redis: Redis, config: Config) -> None:
        self.redis = redis
        self.config = config
        self.px = max(int(config.probe_dormant_after * 1000), 1)
        self._touched: dict[str, float] = {}  # resource -> monotonic time this process last touched it
        self.on = follows_demand(config)

    def want(self, resources: Iterable[str], wake: bool = False) -> None:
        """Touch the resources' wanted keys (those not touched here in the last second, or all if
        `wake`), and with `wake` tell the fleet: a prober of a dormant host probes it now. A
        lost touch costs only pace, never a job: Redis away is not this check's to report."""
        if not self.on:
            return
        now = time.monotonic()
        due = [r for r in dict.fromkeys(resources) if wake or now - self._touched.get(r, -TOUCH_EVERY) >= TOUCH_EVERY]
        if not due:
            return
        with contextlib.suppress(*REDIS_UNREACHABLE), self.redis.pipeline(transaction=False) as pipe:
            for resource in due:
                pipe.set(keys.WANTED.format(resource=resource), 1, px=self.px)
            if wake:
                pipe.publish(keys.WAKE, WAKE_WORD)  # after the SETs: the prober that hears it sees them
            pipe.execute()
            for resource in due:
                self._touched[resource] = now

    def await_fresh(self, hosts: Iterable[str], readings: Mapping[str, Reading | None]) -> dict[str, Reading | None]:
        """Wait (at most an interval and a probe's timeout) for readings of `hosts` taken at full
        pace; what came, newest first, else what was there."""
        hosts = list(hosts)
        found = {h: readings.get(h) for h in hosts}
        deadline = time.monotonic() + self.config.probe_interval + self.config.probe_timeout
        reading_keys = [keys.reading_key(h) for h in hosts]
        while True:
            try:
                raw = self.redis.mget(reading_keys)
            except REDIS_UNREACHABLE:
                return found
            for host, value in zip(hosts, raw, strict=True):
                if value is not None:
                    found[host] = Reading.from_json(value)
            if all(r is not None and not r.dormant for r in found.values()) or time.monotonic() >= deadline:
                return found
            time.sleep(FRESH_POLL)
