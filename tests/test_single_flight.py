"""One probe per host per interval for the whole fleet, however many workers ask."""

from __future__ import annotations

import itertools
import sys
import threading
import time

from msgspec.structs import replace
from redis import Redis
from rq import Worker

from easeoff.feedback import clock, keys
from easeoff.feedback.config import load_config
from easeoff.feedback.levers.switches import Switch, set_switch
from easeoff.feedback.scopes import Scope
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Prober
from tests.conftest import TEST_REDIS_URL, wait_until


def test_many_askers_share_one_probe_per_interval(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(interval=0.5, shard2_hosts='["db1"]'))
    probes: list[tuple[str, float]] = []
    lock = threading.Lock()

    class CountingProber(Prober):
        def read(self, target, previous, context):
            with lock:
                probes.append((target, time.monotonic()))
            return super().read(target, previous, context)

    stop = time.monotonic() + 3.0
    asked = [0] * 8
    failures: list[str] = []

    def asker(i: int) -> None:
        redis = Redis.from_url(TEST_REDIS_URL)
        cache = ReadingsCache(redis, config, prober=CountingProber(config, redis))
        while time.monotonic() < stop:
            reading = cache.current(["db1"]).get("db1")
            if reading is None or reading.error is not None:
                failures.append(f"asker {i} saw {reading}")
            asked[i] += 1

    threads = [threading.Thread(target=asker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert failures == []
    db1_probes = [t for host, t in probes if host == "db1"]
    assert sum(asked) > 100  # the askers really did ask, many times over
    assert 4 <= len(db1_probes) <= 3.0 / 0.5 + 1, len(db1_probes)
    gaps = [b - a for a, b in itertools.pairwise(db1_probes)]
    assert min(gaps) >= 0.5 * 0.9, gaps


def test_probe_error_keeps_hysteresis_state(redis_conn: Redis, write_config, connections) -> None:
    connections.hold(2)
    config = load_config(write_config(high=0.0, low=0.0))
    cache = ReadingsCache(redis_conn, config)
    first = cache.probe_now().get("db1")
    assert first is not None and first.strained["connections"] is True  # everything is above a high of 0

    unreachable = replace(config, hosts={"db1": replace(config.hosts["db1"], port=1)})
    failed = ReadingsCache(redis_conn, unreachable).probe_now().get("db1")
    assert failed is not None
    assert failed.error is not None and failed.strained == first.strained


def test_a_starting_worker_probes_while_the_apps_tasks_load(redis_conn: Redis, write_config, workers, tmp_path) -> None:
    """`easeoff worker` starts its first probes before it imports the app's task modules, so an
    app whose tasks take seconds to import (a framework's start-up) has its readings by then."""
    (tmp_path / "slow_tasks.py").write_text("import time\n\ntime.sleep(3)\n", encoding="utf-8")
    launcher = [sys.executable, "-m", "easeoff.workers.cli", "--import", "slow_tasks", "-P", str(tmp_path)]
    workers.start(write_config(), "heavy", launcher=launcher)
    wait_until(lambda: redis_conn.exists(keys.READING.format(host="db1")), 10, what=f"a reading; {workers.logs()}")
    assert not redis_conn.smembers(Worker.redis_workers_keys), "the worker registered before its tasks loaded"
    wait_until(lambda: redis_conn.smembers(Worker.redis_workers_keys), 30, what=f"the worker; {workers.logs()}")


def test_a_cold_start_reads_switches_set_while_it_awaited_its_first_readings(redis_conn: Redis, write_config) -> None:
    """A pause set while a starting worker waits for its first probe is in the snapshot its
    first claim is judged on (it once read the switches before the wait, and ran a paused job)."""
    config = load_config(write_config())
    probing = threading.Event()

    class SlowProber(Prober):
        def read(self, target, previous, context):
            probing.set()
            time.sleep(0.3)  # a first probe that takes a while (a connect, a TLS handshake)
            return super().read(target, previous, context)

    def pause_meanwhile() -> None:
        probing.wait(5)
        set_switch(redis_conn, Switch("pause", "resource:shard:1", "ops", "meanwhile", at=clock.now()))

    cache = ReadingsCache(redis_conn, config, prober=SlowProber(config, redis_conn))
    operator = threading.Thread(target=pause_meanwhile)
    operator.start()
    try:
        snapshot = cache.current(["db1"])
    finally:
        operator.join(timeout=10)
        cache.close()
    assert probing.is_set() and snapshot.get("db1") is not None
    assert snapshot.switches.paused(Scope.on_resource("shard:1"), clock.now()) is not None


class MarkedProber(Prober):
    """A real probe of the host, its values marked with who took it; held at `gate` while it is unset."""

    def __init__(self, config, redis, mark: float, gate: threading.Event | None = None) -> None:
        super().__init__(config, redis)
        self.mark, self.gate, self.probing = mark, gate, threading.Event()

    def read(self, target, previous, context):
        if target == "db1":
            self.probing.set()
            if self.gate is not None:
                self.gate.wait(10)
        probed = super().read(target, previous, context)
        probed.counters["mark"] = self.mark
        return probed


def test_a_prober_that_lost_its_lease_cannot_overwrite_the_new_probers_reading(redis_conn: Redis, write_config) -> None:
    """A takes db1's lease and stalls mid-probe past it; B takes db1 over and stores a reading. A's
    late store is refused (B's reading stays) and A stops probing db1. `easeoff probe`'s forced
    probe, while B holds the lease, stores nothing either."""
    config = load_config(write_config(interval=5.0))
    lock, stored_key = keys.PROBE_LOCK.format(host="db1"), keys.READING.format(host="db1")
    held = threading.Event()
    a = ReadingsCache(redis_conn, config, prober=MarkedProber(config, redis_conn, 1.0, gate=held))
    b = ReadingsCache(redis_conn, config, prober=MarkedProber(config, redis_conn, 2.0))
    a.lease_ms = 300  # A's lease lapses while its probe stalls
    try:
        a.warm_up()
        assert a.prober.probing.wait(5), "A never probed db1"  # type: ignore[attr-defined]
        wait_until(lambda: not redis_conn.exists(lock), 5, what="A's lease to lapse")
        reading = b.current(["db1"]).get("db1")
        assert reading is not None and reading.counters["mark"] == 2.0, reading
        assert redis_conn.get(lock) == b.token.encode()

        held.set()  # A's probe ends now, long after its lease
        wait_until(lambda: "db1" not in a.loop.owned(), 5, what="A to give db1 up")
        stored = Reading.from_json(redis_conn.get(stored_key))
        assert stored.counters["mark"] == 2.0, "A's late reading overwrote B's"
        assert stored.taken_at == reading.taken_at

        forced = ReadingsCache(redis_conn, config, prober=MarkedProber(config, redis_conn, 3.0)).probe_now()
        assert forced.get("db1") is not None and forced.get("db1").counters["mark"] == 3.0  # type: ignore[union-attr]
        assert Reading.from_json(redis_conn.get(stored_key)).counters["mark"] == 2.0
    finally:
        held.set()
        a.close()
        b.close()
