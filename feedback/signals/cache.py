"""Readings cached in Redis and refreshed single-flight across the fleet.

Each probe target (a MySQL host, a traffic source) has one prober at a time, fleet-wide:
the first process to find its reading due takes its lease (`own_probes.lua`) and from then
on probes it every interval, off its own job loop (signals/probing.py), storing each
reading the moment it is taken and renewing the lease with it (`store_reading.lua`). The
others read what it wrote; if it dies, its lease lapses and the next to find the reading
overdue takes over. The prober carries each signal's state forward in the reading, as the
pure `hysteresis.next_states` decides it. A target no job wants is probed at the dormant pace,
and its readings say so (signals/demand.py): each is due, and its lease lasts, accordingly.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import msgspec
import msgspec.structs
from redis import Redis

from easeoff.feedback import clock as fleet_clock
from easeoff.feedback import keys
from easeoff.feedback.config import WRITER_ROLES, Config
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers.switches import Switches
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.signals.demand import WAKE_WORD, demand_keys, dormant_pace, pace_of
from easeoff.feedback.signals.probing import ProbeLoop
from easeoff.feedback.signals.reading_taker import Judging, ReadingTaker, changes_a_verdict, judging
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot, read_snapshot
from easeoff.feedback.signals.sources import Prober

READING_KEY = keys.READING
NEXT_DUE_KEY = keys.NEXT_DUE
DUTY_GRAIN = 0.5  # seconds: the shortest sleep of an idle prober between its rounds of fleet duties
PROBE_LOCK_KEY = keys.PROBE_LOCK
OWN_PROBES = LuaScript.load("easeoff.feedback", "own_probes", argv=("token", "lease_ms"))
DISOWN_PROBES = LuaScript.load("easeoff.feedback", "disown_probes", argv=("token",))
STORE_READING = LuaScript.load(
    "easeoff.feedback",
    "store_reading",
    argv=("token", "reading", "ttl", "lease_ms", "changed", "channel", "host", "forced"),
)


class ReadingsCache:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        prober: Prober | None = None,
        clock: Callable[[], float] = fleet_clock.now,
        on_refresh: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.redis = redis
        self.config = config
        self.prober = prober or Prober(config, redis)
        self.clock = clock
        # Called with a fresh snapshot, at most once per interval, by each process that probes:
        # the place for fleet-wide follow-ups (cool-downs, limits, promotions).
        self.on_refresh = on_refresh
        self.token = uuid.uuid4().hex
        # Each process treats readings as due a little later than the interval, by its own
        # random slack: the prober's next reading lands first and the rest find it fresh.
        self.slack = random.uniform(0.1, 0.3) * config.probe_interval
        # A prober that stalls for a whole probe and an interval, twice over, has its targets taken.
        self.lease_ms = max(int(2000 * (config.probe_interval + config.probe_timeout)), 1)
        # ... and at the dormant pace, over a dormant interval.
        self.dormant_lease_ms = max(int(2000 * (dormant_pace(config) + config.probe_timeout)), 1)
        self.ttl = max(int(self.config.stale_after * 10), 60)
        # Registered once: each store runs on a probe thread, up to hosts/interval times a second.
        self._own_probes = OWN_PROBES.register(redis)
        self._store_reading = STORE_READING.register(redis)
        self.loop = ProbeLoop(
            self._probe_and_store, config.probe_interval, config.probe_concurrency, self._is_writer, self._pace
        )
        self._demand_keys = demand_keys(config)  # target -> keys any of which says a job wants it
        self._wanted: dict[str, bool] = {}  # target -> wanted as of its last store here (unknown: yes)
        self._next_in: dict[str, float] = {}  # target -> seconds from its last probe's start to its next
        self._rechecking = threading.Lock()  # one look at the demand for our dormant targets at a time
        # target -> monotonic time until which it is probed at full pace, wanted or not: a target
        # taken on here is, for `dormant_after`, as a fleet that just started knows no better.
        self._awake_until: dict[str, float] = {}
        self._latest: dict[str, Reading] = {}  # the newest reading of each target seen here
        self.taker = ReadingTaker(self.prober, clock)
        self._live: Judging = (config, None)  # with ops' live (and shadow) threshold overrides, as of the last snapshot
        self._not_ours: dict[str, float] = {}  # target -> until when another process holds its lease
        self._changed = threading.Event()  # a reading here changed a verdict: wake the idle loop
        self.wakes = 0  # times woken so far (a verdict changed, switches moved, jobs came): see `wake`
        self._stored = threading.Event()  # a reading was stored here: wake a cold start's wait
        self._duties = (0, -math.inf, 0)  # probes ended, when, and verdict changes stored, at the last on_refresh
        self._verdict_changes = 0  # readings stored here that changed a verdict
        self._renewed: dict[str, float] = {}  # target -> monotonic time this process last renewed its lease

    def stored(self, targets: Iterable[str] | None = None) -> Snapshot:
        """What Redis holds now, without probing: one MGET of the readings, hosts out and switches."""
        return read_snapshot(self.redis, self.config.probe_targets if targets is None else targets)

    def next_due_in(self, snapshot: Snapshot) -> float:
        """Seconds until the oldest reading is due; if one is overdue, its prober is at work on it,
        so give it a tenth of an interval to finish."""
        now = self.clock()
        if not snapshot.readings:
            return self.config.probe_interval
        due_in = min(
            r.taken_at + pace_of(r, self.config) - now if r is not None else -math.inf
            for r in snapshot.readings.values()
        )
        return max(0.1 * self.config.probe_interval, due_in + self.slack)

    def probes(self) -> bool:
        """Whether this process probes any target (and so runs the fleet's duties)."""
        return bool(self.loop.owned())

    def pause(self, seconds: float) -> bool:
        """Sleep, but wake the moment a probe (here, or anywhere with `wake`) changes a verdict
        or jobs are announced; True if woken so."""
        woken = self._changed.wait(seconds)
        self._changed.clear()
        return woken

    def wake(self, word: object = None) -> None:
        """A prober somewhere published that a reading changed a verdict, ops moved a switch, jobs
        were announced or a job found its host dormant (keys.WAKE). `wakes` counts them: a snapshot
        read before the latest may be out of date, one read since is not (its readings aside,
        which age). A prober of dormant targets looks whether a job wants them now."""
        self.wakes += 1
        self._changed.set()
        if word is None or _text(word) == WAKE_WORD:
            self._recheck_soon()

    def _recheck_soon(self) -> None:
        """On the probe pool: the demand for our dormant targets, one round trip; those a job
        wants now are probed at once, at full pace."""
        if any(not self._wanted.get(t, True) for t in self.loop.owned()):
            self.loop.submit(self._recheck)

    def _recheck(self) -> None:
        if not self._rechecking.acquire(blocking=False):
            return  # one look is under way: it sees the keys set before this word was sent
        try:
            dormant = [t for t in self.loop.owned() if not self._wanted.get(t, True) and self._demand_keys.get(t)]
            if not dormant:
                return
            with self.redis.pipeline(transaction=False) as pipe:
                for target in dormant:
                    pipe.exists(*self._demand_keys[target])
                found = pipe.execute()
            woken = [t for t, n in zip(dormant, found, strict=True) if n]
            for target in woken:
                self._wanted[target] = True
            if woken:
                self.loop.wake(woken)
        except REDIS_UNREACHABLE:
            pass  # the next store says it
        finally:
            self._rechecking.release()

    def _pace(self, target: str) -> float:
        """Seconds from a probe's start to the target's next (ProbeLoop asks after each)."""
        return self._next_in.get(target, self.config.probe_interval)

    def _lease_s(self, reading: Reading) -> float:
        return (self.dormant_lease_ms if reading.dormant else self.lease_ms) / 1000

    def held_pause(self, snapshot: Snapshot, until_due: float) -> float:
        """How long an idle worker (its queues held, or empty) may sleep. A verdict change or
        announced jobs wake it at once (`wake`), so it need only look in to take over probing
        from a prober that died: the moment that prober's lease on the oldest reading would
        lapse, before the reading goes stale (a lease is shorter than `stale_after`). A prober
        still wakes when its readings come due, for the fleet's duties — but not more often than
        DUTY_GRAIN: a verdict change wakes it at once anyway, and the rest (promotions, cool-down
        renewals) need no finer grain."""
        if self.loop.owned():
            pause = max(until_due, min(DUTY_GRAIN, self.config.stale_after / 4))
            due_in = None if snapshot.next_due is None else snapshot.next_due - self.clock()
            if due_in is not None and due_in > 0:  # a deferred job comes due: promote it on time
                pause = min(pause, due_in + 0.01)
            return pause
        lapses = [r.taken_at + self._lease_s(r) for r in snapshot.readings.values() if r is not None]
        if lapses and len(lapses) == len(snapshot.readings):
            jitter = random.uniform(0.02, 0.1) * self.config.probe_interval
            lapse_in = min(lapses) - self.clock() + jitter
            if lapse_in > 0:
                return max(until_due, min(lapse_in, self.config.stale_after))
        return max(until_due, min(1.0, self.config.stale_after / 2))

    def current(self, targets: Iterable[str] | None = None) -> Snapshot:
        """Stored readings; those overdue that no live process probes, this one takes on."""
        targets = None if targets is None else list(targets)
        snapshot = self._take_on_due(targets)
        readings = dict(snapshot.readings)
        cold = [t for t, r in readings.items() if r is None]
        if cold:
            # Switches are read again with the first readings: one set while they were
            # awaited would otherwise be missed by the claim that follows.
            snapshot = self._await_first(targets, cold)
            readings = dict(snapshot.readings)
        fresh = msgspec.structs.replace(snapshot, readings=readings)
        self._fleet_duties(fresh)
        return fresh

    def warm_up(self) -> None:
        """Start probing what is missing or due, without waiting for it: a worker does this first
        at start-up, so its first probes run beside rq's start-up round trips."""
        self._take_on_due(None)

    def _take_on_due(self, targets: list[str] | None) -> Snapshot:
        """The stored snapshot, after taking on the targets whose readings are due and that no
        live process probes."""
        snapshot = self.stored(targets)
        self._note(snapshot)
        now = self.clock()
        owned = self.loop.owned()
        due = [t for t, r in snapshot.readings.items() if t not in owned and self._is_due(r, now)]
        if due:
            self._take_on(due)
        return snapshot

    def close(self) -> None:
        """Stop probing and give the leases back: other processes take the targets over."""
        owned = sorted(self.loop.owned())
        self.loop.stop()
        for target in owned:
            self.prober.release(target)
        if owned:
            lock_keys = [PROBE_LOCK_KEY.format(host=t) for t in owned]
            with contextlib.suppress(*REDIS_UNREACHABLE):  # then they lapse on their own
                DISOWN_PROBES.register(self.redis)(keys=lock_keys, args=DISOWN_PROBES.args(token=self.token))

    def refresh(
        self, targets: Iterable[str], previous: Mapping[str, Reading | None], switches: Switches | None = None
    ) -> dict[str, Reading]:
        """Probe `targets` now, concurrently, and store the results where no prober holds the
        target (a live prober's readings are the fleet's: these are returned, not stored).

        Writers go first, so replicas probed in the same round compare against the
        heartbeat just written. Live threshold overrides decide the hysteresis state.
        """
        live = judging(switches or Switches(), self.config, self.clock())
        context = {t: r for t, r in previous.items() if r is not None}
        writers = [t for t in targets if self._is_writer(t)]
        others = [t for t in targets if not self._is_writer(t)]
        fresh: dict[str, Reading] = {}
        with ThreadPoolExecutor(max_workers=self.config.probe_concurrency) as pool:
            for batch in (writers, others):
                taken = pool.map(lambda t: self.taker.take(t, context.get(t), context, live), batch)
                fresh.update(zip(batch, taken, strict=True))
                context.update(fresh)
        for target, reading in fresh.items():
            self._store(reading, changes_a_verdict(previous.get(target), reading), forced=True)
        return fresh

    def probe_now(self) -> Snapshot:
        """Fresh readings of every target, whatever the cadence (`easeoff probe`)."""
        snapshot = self.stored()
        readings = dict(snapshot.readings)
        readings.update(self.refresh(list(readings), readings, snapshot.switches))
        return msgspec.structs.replace(snapshot, readings=readings)

    def _note(self, snapshot: Snapshot) -> None:
        """What probes taken here start from: the newest readings, ops' live overrides."""
        for target, reading in snapshot.readings.items():
            known = self._latest.get(target)
            if reading is not None and (known is None or reading.taken_at > known.taken_at):
                self._latest[target] = reading
        self._live = judging(snapshot.switches, self.config, self.clock())

    def _take_on(self, due: list[str]) -> None:
        now = time.monotonic()
        asking = [t for t in due if self._not_ours.get(t, 0.0) <= now]
        if not asking:
            return
        lock_keys = [PROBE_LOCK_KEY.format(host=t) for t in asking]
        won = self._own_probes(keys=lock_keys, args=OWN_PROBES.args(token=self.token, lease_ms=self.lease_ms))
        mine = [t for t, ok in zip(asking, won, strict=True) if ok]
        for target in set(asking) - set(mine):
            self._not_ours[target] = now + self.config.probe_interval
        if mine:
            for target in mine:
                if target not in self.loop.owned():
                    self._awake_until[target] = now + self.config.probe_dormant_after
            self.loop.take_on(mine)

    def _probe_and_store(self, target: str) -> bool:
        """On the probe loop: one reading, stored at once. True while the target is still ours."""
        previous = self._latest.get(target)
        reading = self.taker.take(target, previous, self._latest.copy(), self._live)
        if not self._wanted.get(target, True):
            reading = msgspec.structs.replace(reading, dormant=True)
        self._latest[target] = reading
        changed = changes_a_verdict(previous, reading)
        ours = True
        try:
            ours, wanted = self._store(reading, changed, demand=True)
            wanted = wanted or time.monotonic() < self._awake_until.get(target, -math.inf)
            self._wanted[target] = wanted
            self._next_in[target] = self._next_after(reading, wanted)
            if not ours:  # our lease lapsed and another prober has the target: its readings stand
                self.prober.release(target)
            return ours
        except REDIS_UNREACHABLE:
            return True  # keep probing; the job loop waits Redis out and says so
        finally:
            self._stored.set()
            if changed and ours:  # stored first, so the loop woken here reads the new reading
                self._verdict_changes += 1
                self.wake()

    def _next_after(self, reading: Reading, wanted: bool) -> float:
        """A reading at full pace promised the next within an interval, wanted or not; a dormant
        one a dormant interval later, unless a job wants the host now: then at once."""
        if not reading.dormant:
            return self.config.probe_interval
        return 0.0 if wanted else dormant_pace(self.config)

    def _store(self, reading: Reading, changed: bool, forced: bool = False, demand: bool = False) -> tuple[bool, bool]:
        """Store a reading if this process holds the target's lease (or, `forced`, if no process
        does): (stored, wanted), stored False if refused: the reading was not written; wanted:
        with `demand`, whether a job wants the target now (else True)."""
        target = reading.host
        # Every store at the dormant pace renews the lease, and for a dormant interval.
        lease_ms = self.dormant_lease_ms if reading.dormant else (self.lease_ms if self._renew_due(target) else 0)
        args = STORE_READING.args(
            token=self.token,
            reading=reading.to_json(),
            ttl=self.ttl,
            lease_ms=lease_ms,
            changed="1" if changed else "0",
            channel=keys.WAKE,
            host=target,
            forced="1" if forced else "0",
        )
        demand_keys = self._demand_keys.get(target, ()) if demand else ()
        lock_keys = [READING_KEY.format(host=target), PROBE_LOCK_KEY.format(host=target)]
        stored, wanted = self._store_reading(keys=[*lock_keys, *demand_keys], args=args)
        return bool(stored), bool(wanted)

    def _renew_due(self, target: str) -> bool:
        """Renew a lease once a third of it has passed, not at every store: at a short interval a
        lease spans several readings, and each renewal is two commands more on Redis."""
        now = time.monotonic()
        if now - self._renewed.get(target, -math.inf) < self.lease_ms / 3000:
            return False
        self._renewed[target] = now
        return True

    def _fleet_duties(self, fresh: Snapshot) -> None:
        """This process probed since its last follow-up, an interval or more ago, or stored a
        reading that changed a verdict since: follow up now."""
        if self.on_refresh is None:
            return
        ended, at, changes = self._duties
        now = time.monotonic()
        # A deferred job come due is promoted on time even while every probe here is slowed.
        came_due = fresh.next_due is not None and fresh.next_due <= self.clock()
        due = (self.loop.finished() > ended or came_due) and now - at >= 0.9 * self.config.probe_interval
        if due or self._verdict_changes > changes:  # a cleared resource's jobs go back now, not next round
            self._duties = (self.loop.finished(), now, self._verdict_changes)
            self.on_refresh(fresh)

    def _is_writer(self, target: str) -> bool:
        return target in self.config.hosts and bool(self.config.host_roles(target) & WRITER_ROLES)

    def _await_first(self, targets: list[str] | None, cold: list[str]) -> Snapshot:
        """On a cold start, wait for the first probe of `cold` (ours or another's) rather than fail
        closed: woken by each store here, polling for another process's."""
        deadline = time.monotonic() + self.config.probe_timeout + 0.5
        while True:
            self._stored.clear()
            snapshot = self.stored(targets)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or all(snapshot.readings.get(t) is not None for t in cold):
                return snapshot
            self._stored.wait(min(0.02, remaining))

    def _is_due(self, reading: Reading | None, now: float) -> bool:
        return reading is None or now - reading.taken_at >= pace_of(reading, self.config) + self.slack


def _text(word: object) -> str:
    """A pub/sub message's data (a dict from redis-py's handler, or the data itself) as text."""
    data = word.get("data") if isinstance(word, dict) else word
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
