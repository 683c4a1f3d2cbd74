"""Readings cached in Redis and refreshed single-flight across the fleet.

Each probe target (a MySQL host, a traffic source) is probed at most once per probe
interval however many workers ask: the first worker to find a reading due takes a
short Redis lock (SET NX PX interval) and probes; the others read what it wrote.
The prober carries each signal's state forward in the reading, as the pure
`hysteresis.next_states` decides it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.config import WRITER_ROLES, Config
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY, parse_hosts_out
from easeoff.feedback.levers.switches import SWITCHES_KEY, Switches, parse_switches
from easeoff.feedback.signals.hysteresis import next_states
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.signals.sources import ProbeError, Prober

READING_KEY = keys.READING
PROBE_LOCK_KEY = keys.PROBE_LOCK


class ReadingsCache:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        prober: Prober | None = None,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.redis = redis
        self.config = config
        self.prober = prober or Prober(config, redis)
        self.clock = clock
        # Called with the fresh snapshot by whichever process just probed: once per
        # interval fleet-wide, the place for fleet-wide follow-ups (cool-downs, limits).
        self.on_refresh = on_refresh
        self.token = uuid.uuid4().hex
        # Each process treats readings as due a little later than the interval, by its own
        # random slack: the first to wake probes and the rest find a fresh reading instead of
        # all racing for the lock at the same instant.
        self.slack = random.uniform(0.0, 0.2) * config.probe_interval

    def stored(self, targets: Iterable[str] | None = None) -> Snapshot:
        """What Redis holds now, without probing: one MGET of the readings, hosts out and switches."""
        targets = list(self.config.probe_targets if targets is None else targets)
        keys = [*(READING_KEY.format(host=t) for t in targets), HOSTS_OUT_KEY, SWITCHES_KEY]
        *raw, out, switches = self.redis.mget(keys)
        readings = {t: (Reading.from_json(r) if r else None) for t, r in zip(targets, raw, strict=True)}
        return Snapshot(readings=readings, hosts_out=parse_hosts_out(out), switches=parse_switches(switches))

    def next_due_in(self, snapshot: Snapshot) -> float:
        """Seconds until the oldest reading is due for a probe; if one is overdue, another process
        holds its lock and is probing now, so give it a tenth of an interval to finish."""
        now = self.clock()
        ages = [now - r.taken_at if r is not None else math.inf for r in snapshot.readings.values()]
        if not ages:
            return self.config.probe_interval
        return max(0.1 * self.config.probe_interval, self.config.probe_interval + self.slack - max(ages))

    def current(self, targets: Iterable[str] | None = None) -> Snapshot:
        """Stored readings, after refreshing those that are due and whose lock this process wins."""
        snapshot = self.stored(targets)
        readings = dict(snapshot.readings)
        now = self.clock()
        due = [t for t, r in readings.items() if self._is_due(r, now)]
        if not due:
            return snapshot
        won = self._take_locks(due)
        if won:
            readings.update(self.refresh(won, readings, snapshot.switches))
        cold = [t for t in due if readings[t] is None and t not in won]
        if cold:
            readings.update(self._await_first(cold))
        fresh = dataclasses.replace(snapshot, readings=readings)
        if won and self.on_refresh is not None:
            self.on_refresh(fresh)
        return fresh

    def refresh(
        self, targets: Iterable[str], previous: Mapping[str, Reading | None], switches: Switches | None = None
    ) -> dict[str, Reading]:
        """Probe `targets` now and store the results; the caller decides who may.

        Writers go first, so replicas probed in the same round compare against the
        heartbeat just written. Live threshold overrides decide the hysteresis state.
        """
        config = (switches or Switches()).apply(self.config, self.clock())
        context = dict(previous)
        ordered = sorted(targets, key=lambda t: not (self._roles(t) & WRITER_ROLES))
        fresh = {}
        for target in ordered:
            fresh[target] = context[target] = self._probe(target, previous.get(target), context, config)
        ttl = max(int(self.config.stale_after * 10), 60)
        with self.redis.pipeline(transaction=False) as pipe:
            for target, reading in fresh.items():
                pipe.set(READING_KEY.format(host=target), reading.to_json(), ex=ttl)
            pipe.execute()
        return fresh

    def probe_now(self) -> Snapshot:
        """Fresh readings of every target, whatever the cadence (`easeoff probe`)."""
        snapshot = self.stored()
        readings = dict(snapshot.readings)
        readings.update(self.refresh(list(readings), readings, snapshot.switches))
        return dataclasses.replace(snapshot, readings=readings)

    def _roles(self, target: str) -> frozenset[str]:
        return self.config.host_roles(target) if target in self.config.hosts else frozenset()

    def _await_first(self, targets: list[str]) -> dict[str, Reading | None]:
        """On a cold start, wait for the probe another process is taking rather than fail closed."""
        deadline = time.monotonic() + self.config.probe_timeout + 0.5
        readings = dict(self.stored(targets).readings)
        while any(r is None for r in readings.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
            readings = dict(self.stored(targets).readings)
        return readings

    def _is_due(self, reading: Reading | None, now: float) -> bool:
        return reading is None or now - reading.taken_at >= self.config.probe_interval + self.slack

    def _take_locks(self, targets: list[str]) -> list[str]:
        px = max(int(self.config.probe_interval * 1000), 1)
        with self.redis.pipeline(transaction=False) as pipe:
            for target in targets:
                pipe.set(PROBE_LOCK_KEY.format(host=target), self.token, nx=True, px=px)
            results = pipe.execute()
        return [t for t, ok in zip(targets, results, strict=True) if ok]

    def _probe(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None], config: Config
    ) -> Reading:
        taken_at = self.clock()
        was = previous.strained if previous is not None else {}
        try:
            values, notes = self.prober.read(target, previous, context)
        except ProbeError as exc:
            return Reading(host=target, taken_at=taken_at, error=str(exc), strained=dict(was))
        strained = next_states(target, values, was, config)
        return Reading(host=target, taken_at=taken_at, values=values, strained=strained, notes=notes)
