"""The admission pipeline's rules (workers/checks.py) decided without servers: the order of the
checks, the database's health with a queue's own resources, a dormant reading never admitting,
and a paused task's quick return. The fleet tests (test_worker_gate.py, test_probe_demand.py,
test_switches.py) show the same rules through real workers."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.feedback.config import parse_config
from easeoff.feedback.levers.switches import Switch, Switches
from easeoff.feedback.observe.gate_families import verdict_families
from easeoff.feedback.observe.metric_names import RESOURCE_HOLD_REASONS
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import ADMIT, Verdict
from easeoff.tasks.meta import JobMeta
from easeoff.workers.checks import Candidate, ResourceHealth, TaskSwitches, admit
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    """
[probe]
interval = 1.0
stale_after = 5.0
[backoff]
base = 1.0
cap = 30.0
[mysql.hosts.a]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.b]
url = "mysql://root@127.0.0.1:3307"
[resources."shard:1"]
hosts = ["a"]
[resources."archive"]
hosts = ["b"]
[signals.connections]
high = 0.8
low = 0.6
[queues.heavy]
[queues.archive]
resources = ["archive"]
""",
    "admission.toml",
    {},
)
NOW = 1_000_000.0
LAZY = Redis.from_url(TEST_REDIS_URL)  # never connects: nothing here sends a command


def reading(host: str, value: float, dormant: bool = False) -> Reading:
    return Reading(host, NOW - 0.2, {"connections": value}, {"connections": value > 0.8}, dormant=dormant)


def candidate(snapshot: Snapshot, queue: str = "heavy", task: str = "record_run") -> Candidate:
    job = Job.create("easeoff.tasks.catalog.record_run", connection=LAZY, serializer=JSONSerializer)
    meta = JobMeta(task=task, resources=("shard:1",))
    return Candidate(job, meta, Queue(queue, connection=LAZY), "exec-1", snapshot, NOW)


def healthy() -> Snapshot:
    return Snapshot({"a": reading("a", 0.1), "b": reading("b", 0.1)})


def test_the_first_check_that_defers_decides_and_the_later_ones_are_not_asked() -> None:
    """The slots, which take a lease, come last: a job held by an earlier check takes none."""
    asked: list[str] = []

    def check(name: str, verdict: Verdict | None) -> Callable[[Candidate], Verdict | None]:
        def run(_: Candidate) -> Verdict | None:
            asked.append(name)
            return verdict

        return run

    held = Verdict(False, (Reason(Kind.PAUSED, "task:record_run", detail="ops"),), delay=2.0)
    checks = [check("health", None), check("switches", held), check("slots", ADMIT)]
    assert admit(checks, candidate(healthy())) is held and asked == ["health", "switches"]
    asked.clear()
    assert admit(checks[:1], candidate(healthy())) is ADMIT and asked == ["health"]


def test_health_judges_the_jobs_resources_and_its_queues_own() -> None:
    health = ResourceHealth(CONFIG, random.Random(1))
    assert health(candidate(healthy())) is None
    archive_strained = Snapshot({"a": reading("a", 0.1), "b": reading("b", 0.95)})
    assert health(candidate(archive_strained)) is None  # the queue "heavy" touches no archive
    verdict = health(candidate(archive_strained, queue="archive"))
    assert verdict is not None and not verdict.admit
    assert verdict.texts == ["connections:b 0.95 > high 0.8"] and 1.0 <= verdict.delay <= 30.0


def test_a_reading_taken_at_the_dormant_pace_admits_no_job_however_healthy() -> None:
    """No fresh probe came in time (no `wants` here to wait for one): fail closed, its reading
    stale for a job, deferred by the backoff and at least a probe interval."""
    health = ResourceHealth(CONFIG, random.Random(2))
    snapshot = Snapshot({"a": reading("a", 0.1, dormant=True), "b": reading("b", 0.1)})
    verdict = health(candidate(snapshot))
    assert verdict is not None and not verdict.admit
    assert [(r.kind, r.subject) for r in verdict.reasons] == [(Kind.STALE_READING, "a")]
    assert verdict.delay == 1.0  # a first deferral: the floor, one probe interval
    strained = health(candidate(Snapshot({"a": reading("a", 0.95, dormant=True)})))
    assert strained is not None
    assert [(r.kind, r.label) for r in strained.reasons] == [
        (Kind.SIGNAL, "connections"),
        (Kind.STALE_READING, "stale_reading"),
    ]


def test_a_paused_task_waits_about_a_probe_interval_and_other_tasks_run() -> None:
    pause = Switch("pause", "task:record_run", "alice", "deploy 412", NOW - 10)
    snapshot = Snapshot(healthy().readings, switches=Switches({pause.key: pause}))
    switches = TaskSwitches(CONFIG, random.Random(3))
    delays = []
    for _ in range(50):
        verdict = switches(candidate(snapshot))
        assert verdict is not None and verdict.texts == ["paused:task:record_run (alice: deploy 412)"]
        delays.append(verdict.delay)
    assert 0.5 <= min(delays) < max(delays) <= 1.5  # jittered around the interval, not the backoff
    assert switches(candidate(snapshot, task="other")) is None


def test_a_signals_strain_is_counted_under_the_signals_name_not_its_kind() -> None:
    """`easeoff_resource_hold_reasons{reason}` names the signal (`connections`), as before the kind
    became `Kind.SIGNAL`; a fixed kind (no reading of a host) is counted under the kind."""
    snapshot = Snapshot({"a": reading("a", 0.95)})  # b never read
    families = {f.name: f for f in verdict_families(CONFIG, snapshot, NOW)}
    counted = {(s.labels["resource"], s.labels["reason"]): s.value for s in families[RESOURCE_HOLD_REASONS].samples}
    assert counted == {("shard:1", "connections"): 1, ("archive", "no_reading"): 1}
    assert not any(reason == "signal" for _, reason in counted)
