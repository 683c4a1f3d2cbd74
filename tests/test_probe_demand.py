"""Probing follows demand (feedback/signals/demand.py): a host no job wants is probed at the
dormant pace; the first job for it wakes its prober and runs on a fresh reading; demand on one
resource leaves the hosts of another dormant. Real Redis, real MariaDB, real workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.feedback import clock, keys
from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.demand import Wants
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.signals.sources import Prober
from easeoff.feedback.verdict.gate import dormant_reasons, strain_reasons
from easeoff.tasks.catalog import noop
from easeoff.tasks.meta import JobMeta
from tests.conftest import TEST_REDIS_URL, stays_true, ticks, wait_until

INTERVAL, DORMANT_AFTER = 0.2, 1.0


def dormant_probe(stale_after: float, dormant_interval: float) -> str:
    """`[probe]` keys after stale_after, through the template's stale_after slot."""
    return f"{stale_after}\ndormant_after = {DORMANT_AFTER}\ndormant_interval = {dormant_interval}"


class CountingProber(Prober):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.at: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def read(self, target, previous, context):  # type: ignore[no-untyped-def]
        with self.lock:
            self.at.setdefault(target, []).append(time.monotonic())
        return super().read(target, previous, context)

    def count(self, target: str, since: float) -> int:
        with self.lock:
            return sum(1 for t in self.at.get(target, []) if t >= since)


def stored(redis: Redis, host: str) -> Reading | None:
    raw = redis.get(keys.reading_key(host))
    return Reading.from_json(raw) if raw else None


@pytest.fixture
def woken_cache(redis_conn: Redis) -> Iterator[list[ReadingsCache]]:
    """Caches put here hear the fleet's wake-up word, as a worker's do, and stop probing at the end."""
    caches: list[ReadingsCache] = []
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(**{keys.WAKE: lambda message: [c.wake(message) for c in caches]})
    thread = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    yield caches
    thread.stop()
    for cache in caches:
        cache.close()


def idle(
    cache: ReadingsCache, targets: list[str], seconds: float, each: Callable[[], None] = lambda: None
) -> list[Snapshot]:
    """Ask as an idle worker does (or, with `each`, a busy one), every 50 ms, for `seconds`: the snapshots seen."""
    seen = []
    for _ in ticks(seconds, 0.05):
        seen.append(cache.current(targets))
        each()
    return seen


def test_a_host_no_job_wants_is_probed_at_the_dormant_pace(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(interval=INTERVAL, stale_after=dormant_probe(2.0, 3.0)))
    prober = CountingProber(config, redis_conn)
    cache = ReadingsCache(redis_conn, config, prober=prober)
    try:
        idle(cache, ["db1"], DORMANT_AFTER + 2 * INTERVAL + 0.5)  # full pace for a minute's stand-in, then slowing
        began = time.monotonic()
        seen = idle(cache, ["db1"], 6.0)
        probes = prober.count("db1", began)
        # At full pace 30 probes; at the dormant pace (3 s) two or three.
        assert 1 <= probes <= 3, probes
        assert all(s.get("db1") is not None and s.get("db1").dormant for s in seen)  # type: ignore[union-attr]
        # Readings up to 3 s old, past stale_after (2 s): not held as stale while their prober lives ...
        for snapshot in seen:
            reading = snapshot.get("db1")
            assert reading is not None
            assert strain_reasons(["shard:1"], snapshot, config, reading.taken_at + 2.9) == []
        oldest = max(s.get("db1").taken_at for s in seen)  # type: ignore[union-attr]
        # ... but no job runs on one, however young.
        assert dormant_reasons(["db1"], seen[-1], config, oldest + 0.01) != []
    finally:
        cache.close()


def test_demand_on_one_resource_leaves_the_hosts_of_another_dormant(
    redis_conn: Redis, write_config, woken_cache: list[ReadingsCache]
) -> None:
    extra = '[mysql.hosts.db2]\nurl = "mysql://root@127.0.0.1:3306"\n'
    path = write_config(interval=INTERVAL, stale_after=dormant_probe(2.0, 4.0), shard2_hosts='["db2"]', extra=extra)
    config = load_config(path)
    prober = CountingProber(config, redis_conn)
    cache = ReadingsCache(redis_conn, config, prober=prober)
    woken_cache.append(cache)
    both = ["db1", "db2"]
    cache.current(both)
    wait_until(
        lambda: all((r := stored(redis_conn, h)) is not None and r.dormant for h in both),
        DORMANT_AFTER + 4.0 + 3.0,
        what="both hosts dormant",
    )
    asked = time.monotonic()
    wants = Wants(redis_conn, config)
    wants.want(["shard:1"], wake=True)
    wait_until(
        lambda: (r := stored(redis_conn, "db1")) is not None and not r.dormant,
        INTERVAL + 1.0,
        interval=0.01,
        what="db1 probed at full pace once a job wants shard:1",
    )
    woke_in = time.monotonic() - asked
    idle(cache, both, 3.0, lambda: wants.want(["shard:1"]))  # jobs on shard:1 keep coming (a touch a second)
    assert prober.count("db1", asked) >= 3.0 / INTERVAL * 0.6  # shard:1 is wanted: full pace
    assert prober.count("db2", asked) <= 2  # shard:2 is not: 4 s apart
    db2 = stored(redis_conn, "db2")
    assert db2 is not None and db2.dormant
    assert woke_in < INTERVAL + 1.0


def test_the_first_job_wakes_probing_and_runs_on_a_fresh_reading(redis_conn: Redis, write_config, workers) -> None:
    config_path = write_config(interval=INTERVAL, stale_after=dormant_probe(1.0, 6.0))
    workers.start(config_path, "heavy")
    wait_until(
        lambda: (r := stored(redis_conn, "db1")) is not None and r.dormant,
        DORMANT_AFTER + 6.0 + 5.0,
        what=f"db1 dormant; {workers.logs()}",
    )
    # Every reading stored from here on, as (taken_at, dormant).
    history: list[tuple[float, bool]] = []
    done = threading.Event()

    def watch() -> None:
        conn = Redis.from_url(TEST_REDIS_URL)
        while not done.wait(0.005):  # a look every 5 ms until the test has what it needs
            reading = stored(conn, "db1")
            if reading is not None and (not history or history[-1][0] != reading.taken_at):
                history.append((reading.taken_at, reading.dormant))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_until(lambda: bool(history), 2.0, what="the watcher to hold the dormant reading")
    enqueued_at = clock.now()
    job = noop.enqueue(shard=1, connection=redis_conn)

    def finished() -> Job | None:
        fetched = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
        return fetched if fetched.ended_at is not None else None

    # rq's started_at is the claim, written before the gate waits for a fresh reading: the job's
    # end, not its start, bounds the reading it was admitted on.
    ran = wait_until(finished, 10.0, interval=0.01, what=f"the job finished; {workers.logs()}")
    done.set()
    watcher.join(timeout=5)
    assert isinstance(ran, Job) and ran.ended_at is not None
    ended_at = ran.ended_at.timestamp()
    assert JobMeta.of(ran).deferrals == 0  # not refused as stale on the dormant reading, nor deferred to wait
    # The prober was woken: a reading at full pace, taken after the job came and before it ended,
    # well within the dormant interval (6 s) and about one interval from the job's arrival.
    fresh = [t for t, dormant in history if not dormant and enqueued_at - 0.05 <= t <= ended_at]
    assert fresh, (history, enqueued_at, ended_at)
    assert ended_at - enqueued_at < 1.5 + INTERVAL, ended_at - enqueued_at


def test_a_running_job_keeps_its_host_probed_at_full_pace(redis_conn: Redis, shards, write_config, workers) -> None:
    """A job that runs longer than `dormant_after` on a resource with no limit (no slot to keep it
    wanted) still has its host read at full pace: its critical check reads live readings, not
    ones taken every dormant interval."""
    from easeoff.tasks.catalog import record_run

    config_path = write_config(interval=INTERVAL, stale_after=dormant_probe(1.0, 6.0))
    workers.start(config_path, "heavy")
    wait_until(lambda: (r := stored(redis_conn, "db1")) is not None and r.dormant, 15.0, what="db1 dormant")
    job = record_run.enqueue(shard=1, tag="long", seconds=DORMANT_AFTER + 4.0, connection=redis_conn)
    wait_until(
        lambda: Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).started_at is not None,
        10.0,
        what="the long job started",
    )

    def live() -> bool:
        reading = stored(redis_conn, "db1")
        return reading is not None and not reading.dormant and clock.now() - reading.taken_at < 4 * INTERVAL + 0.5

    # From its start to well past dormant_after since its claim (the job runs DORMANT_AFTER + 4 s).
    stays_true(live, DORMANT_AFTER + 3.0, interval=0.05, what="db1 read at full pace while its job runs")


@pytest.mark.unit
def test_the_hosts_of_a_budget_measured_on_them_are_never_dormant(write_config) -> None:  # type: ignore[no-untyped-def]
    """A budget learns its baseline while nothing runs, from readings at full pace (a canary
    burst is sized for the interval): its hosts stay wanted; another resource's go dormant."""
    from easeoff.feedback.signals.demand import demand_keys

    extra = '[mysql.hosts.db2]\nurl = "mysql://root@127.0.0.1:3306"\n[resources."shard:1".budget]\nlatency = "1.5x"\n'
    config = load_config(
        write_config(interval=INTERVAL, stale_after=dormant_probe(2.0, 4.0), shard2_hosts='["db2"]', extra=extra)
    )
    found = demand_keys(config)
    assert "db1" not in found  # shard:1's budget is read on db1: always wanted
    assert found.get("db2")  # shard:2 has no budget: dormant when no job wants it
