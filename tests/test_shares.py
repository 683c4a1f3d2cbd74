"""Tasks share a tight resource by weight: the rules as pure functions, the scripts that carry
them out on real Redis against those rules, and real workers running two tasks 3:1."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from easeoff.feedback import keys
from easeoff.feedback.config import load_config
from easeoff.feedback.levers import shares
from easeoff.feedback.levers.limits import Claimant, Leases, LeaseScope, Refusal
from easeoff.feedback.reasons import Kind
from easeoff.feedback.tally.counters import counter_field, counter_key
from easeoff.tasks.catalog import share_heavy, share_light
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.registry import HeavyTask, TaskError, heavy_task
from easeoff.workers.deferral import park_scopes
from easeoff.workers.moves import JobMoves
from tests.conftest import WorkerProcesses, ticks, wait_until

SCOPE = "shard:7"
TIGHT = f"""
[resources."{SCOPE}"]
hosts = ["db1"]
[resources."{SCOPE}".concurrency]
min = 1
max = 1
"""

# -- the rules, pure -----------------------------------------------------------------


@pytest.mark.unit
@given(
    weights=st.lists(st.floats(min_value=0.1, max_value=20), min_size=2, max_size=5),
    slots=st.integers(min_value=0, max_value=400),
)
def test_turns_keep_every_pair_of_tasks_within_one_stride_of_their_weights(weights: list[float], slots: int) -> None:
    named = {f"t{i}": w for i, w in enumerate(weights)}
    granted = shares.take_turns(named, slots)
    assert sum(granted.values()) == slots
    for a, wa in named.items():
        for b, wb in named.items():
            # Passes (grants over weight) never part by more than the larger stride: stride
            # scheduling's bound, so each task's share is its weight's, to within a slot or so.
            gap = granted[a] / wa - granted[b] / wb
            assert abs(gap) <= max(shares.stride(wa), shares.stride(wb)) + 1e-6


@pytest.mark.unit
def test_weight_three_beside_weight_one_gets_three_slots_to_one() -> None:
    assert shares.take_turns({"heavy": 3, "light": 1}, 400) == {"heavy": 300, "light": 100}
    assert shares.take_turns({"a": 1, "b": 1}, 9) in ({"a": 5, "b": 4}, {"a": 4, "b": 5})


@pytest.mark.unit
def test_a_task_that_comes_brings_no_credit_and_equal_passes_hold_nobody_back() -> None:
    assert shares.level(active=[4.0, 2.5], known=[4.0, 2.5, 9.0]) == 2.5  # level with the active
    assert shares.level(active=[], known=[1.0, 7.0]) == 7.0  # none active: not behind anyone known
    assert shares.level(active=[], known=[]) == 0.0
    assert shares.rejoin(None, 2.5) == 2.5
    assert shares.rejoin(1.0, 2.5) == 2.5  # away while the others ran: raised, no catching up
    assert shares.rejoin(3.0, 2.5) == 3.0  # ran more than them: waits for them
    passes = {"a": 1.0, "b": 1.0, "c": 0.5}
    assert shares.before("a", passes, ["b"]) is None
    assert shares.before("a", passes, ["b", "c"]) == "c"
    assert shares.before("c", passes, ["a", "b", "c"]) is None
    assert shares.goes_first(passes, {"a": 5.0, "b": 1.0}) == "b"  # a tie: the oldest job first
    assert shares.goes_first(passes, {"a": 5.0, "c": 9.0}) == "c"  # the lowest pass first
    assert shares.goes_first(passes, {}) is None


@pytest.mark.unit
def test_weight_is_a_positive_number_carried_in_the_meta() -> None:
    for bad in (0, -1, "3", True, math.nan, math.inf, None):
        with pytest.raises(TaskError, match="weight") as info:
            heavy_task(queue="q", weight=bad)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    task = heavy_task(queue="q", weight=2.5)(_weighed)
    assert isinstance(task, HeavyTask) and task.job_meta((), {}).weight == 2.5
    stored = task.job_meta((), {}).to_dict()
    assert stored["weight"] == 2.5 and JobMeta.from_dict(stored).weight == 2.5
    assert "weight" not in share_light.job_meta((), {"shard": 7}).to_dict()  # the default is left out
    assert JobMeta.from_dict({"task": "x", "weight": -2}).weight == 1.0  # a damaged weight: the default
    assert share_heavy.job_meta((), {"shard": 7}).weight == 3.0


def _weighed() -> None:
    return None


@pytest.mark.unit
def test_a_job_waiting_for_a_slot_waits_in_its_tasks_list_too() -> None:
    meta = JobMeta(task="share_light", resources=(SCOPE,))
    refused = Refusal(SCOPE, 1, 1, first="share_heavy").reason
    assert refused.kind == Kind.SHARE and refused.waits_for == "slot"
    assert str(refused) == "share:shard:7 1/1 in use, share_heavy goes first (weights)"
    assert park_scopes(meta, [refused]) == ["slot:shard:7", "slot-class:shard:7|share_light"]
    low = Refusal(SCOPE, 0, 2, low_priority=True, first="normal priority").reason
    assert low.kind == Kind.YIELD and "waits behind normal" in str(low)
    assert park_scopes(meta, [low]) == ["slot-low:shard:7"]


# -- the scripts, on real Redis ------------------------------------------------------


class Fleet:
    """Claims, slots and parking done by hand, as a worker does them, for a scope of `limit` slots."""

    def __init__(self, redis: Redis, leases: Leases, limit: int) -> None:
        self.redis, self.leases = redis, leases
        self.moves = JobMoves(redis)
        self.queue = Queue("heavy", connection=redis, serializer=JSONSerializer)
        self.scope = LeaseScope(SCOPE, limit)
        self.tasks = {"share_heavy": share_heavy, "share_light": share_light}

    def claim_and_ask(self, reserve: int = 0) -> tuple[str, str, Refusal | None]:
        """Claim the queue's next job and ask for its slot; a refused job is parked, as the worker parks it."""
        claim = self.moves.claim([self.queue], "w", ttl=60)
        assert claim is not None
        job = Job.fetch(claim.job_id, connection=self.redis, serializer=JSONSerializer)
        meta = JobMeta.of(job)
        claimant = Claimant(meta.task, meta.weight, f"{job.id}|heavy")
        refusal = self.leases.acquire([self.scope], claim.execution.composite_key, reserve, claimant)
        if refusal is not None:
            parks = park_scopes(meta, [refusal.reason])
            assert self.moves.defer(
                job, self.queue, claim.execution, time.time() + 300, meta.task, [refusal.reason], parks
            )
        return meta.task, claim.execution.composite_key, refusal

    def enqueue(self, task: str, n: int = 1) -> None:
        for _ in range(n):
            self.tasks[task].enqueue(shard=7, connection=self.redis)

    def end(self, member: str) -> int:
        """A job ends: its slot back and handed on in one transaction, as the worker's ending does it."""
        with self.redis.pipeline() as pipe:
            Leases.release([self.scope], member, pipe)
            self.moves.release_slots([SCOPE], pipeline=pipe)
            pipe.execute()
        return int(self.redis.llen(self.queue.key))

    def passes(self) -> dict[str, float]:
        raw = self.redis.hgetall(keys.share_key(SCOPE))
        return {k.decode(): float(v.split()[0]) for k, v in raw.items()}

    def heads(self) -> dict[str, float]:
        found = {}
        for task in self.tasks:
            head = self.redis.zrange(keys.parked_key(keys.slot_class_park_scope(SCOPE, task)), 0, 0, withscores=True)
            if head:
                found[task] = head[0][1]
        return found


@pytest.fixture
def fleet(redis_conn: Redis, write_config) -> Fleet:
    config = load_config(write_config(extra=TIGHT))
    return Fleet(redis_conn, Leases(redis_conn, config), 1)


def test_freed_slots_go_by_turn_as_the_rules_say_three_to_one(fleet: Fleet) -> None:
    for _ in range(20):  # interleaved: first come, first served would run them one to one
        fleet.enqueue("share_heavy")
        fleet.enqueue("share_light")
    task, holder, refused = fleet.claim_and_ask()
    assert refused is None and task == "share_heavy"
    for _ in range(39):
        _, _, refused = fleet.claim_and_ask()
        assert refused is not None and refused.reason.kind == Kind.CONCURRENCY
    assert fleet.redis.llen(fleet.queue.key) == 0

    order = []
    for _ in range(16):
        expected = shares.goes_first(fleet.passes(), fleet.heads())
        assert fleet.end(holder) == 1  # exactly one job handed the slot, back in its queue
        task, holder, refused = fleet.claim_and_ask()
        assert refused is None, refused
        assert task == expected
        order.append(task)
    assert order.count("share_heavy") == 12 and order.count("share_light") == 4, order
    assert fleet.redis.zcard(keys.parked_key("slot:" + SCOPE)) == 39 - 16


def test_a_free_slot_is_refused_while_another_task_waits_with_the_lower_pass(fleet: Fleet) -> None:
    fleet.scope = LeaseScope(SCOPE, 2)
    fleet.enqueue("share_heavy", 2)
    fleet.enqueue("share_light")
    _, first_heavy, refused = fleet.claim_and_ask()
    assert refused is None
    _, second_heavy, refused = fleet.claim_and_ask()
    assert refused is None  # heavy alone: never held back by shares
    _, _, refused = fleet.claim_and_ask()  # light comes, and finds the limit full
    assert refused is not None and refused.reason.kind == Kind.CONCURRENCY
    passes = fleet.passes()
    assert passes["share_light"] == pytest.approx(passes["share_heavy"])  # it starts level: no credit

    fleet.enqueue("share_heavy")  # ahead of the light job, which a freed slot hands back to the queue
    fleet.end(first_heavy)
    task, _, refused = fleet.claim_and_ask()
    assert task == "share_heavy" and refused is None  # equal passes hold nobody back
    task, _, refused = fleet.claim_and_ask()
    assert task == "share_light" and refused is not None and refused.reason.kind == Kind.CONCURRENCY

    fleet.enqueue("share_heavy")  # heavy is a third of a slot ahead now, and light waits
    fleet.end(second_heavy)
    task, _, refused = fleet.claim_and_ask()
    assert task == "share_heavy" and refused is not None and refused.reason.kind == Kind.SHARE
    assert str(refused.reason) == f"share:{SCOPE} 1/2 in use, share_light goes first (weights)"
    task, _, refused = fleet.claim_and_ask()
    assert task == "share_light" and refused is None
    assert fleet.heads().keys() == {"share_heavy"}  # the light job left its list as it took the slot


def test_low_priority_yields_a_free_slot_to_any_task_waiting_for_one(fleet: Fleet) -> None:
    fleet.scope = LeaseScope(SCOPE, 3)
    fleet.redis.set(keys.limit_key(SCOPE), 1)
    fleet.enqueue("share_light", 2)
    assert fleet.claim_and_ask()[2] is None
    assert fleet.claim_and_ask()[2] is not None  # full: parked, waiting for its turn
    fleet.redis.set(keys.limit_key(SCOPE), 3)  # raised: two slots free, one parked job not yet handed one
    fleet.enqueue("share_heavy")
    _, _, refused = fleet.claim_and_ask(reserve=1)
    assert refused is not None and refused.reason.kind == Kind.YIELD
    assert str(refused.reason).endswith("low priority waits behind normal")
    assert fleet.moves.release_slots([SCOPE]) == 1  # the parked job is handed its slot
    assert fleet.claim_and_ask()[2] is None
    fleet.enqueue("share_heavy")
    assert fleet.claim_and_ask(reserve=1)[2] is not None  # the last slot is still kept for normal work


# -- real workers ---------------------------------------------------------------------

BACKLOG = 400  # jobs of each task: more than a minute's worth of either


@pytest.mark.slow
def test_two_tasks_sharing_one_slot_run_three_to_one_by_weight(
    redis_conn: Redis, write_config, workers: WorkerProcesses
) -> None:
    config_path = write_config(interval=0.5, extra=TIGHT)
    for _ in range(BACKLOG):  # deep backlogs of equal jobs, interleaved: first come, first served is one to one
        share_heavy.enqueue(shard=7, seconds=0.15, connection=redis_conn)
        share_light.enqueue(shard=7, seconds=0.15, connection=redis_conn)
    for _ in range(3):
        workers.start(config_path, "heavy")

    def finished() -> dict[str, int]:
        raw = redis_conn.hmget(
            counter_key("finished"), [counter_field("heavy", t) for t in ("share_heavy", "share_light")]
        )
        return {"share_heavy": int(raw[0] or 0), "share_light": int(raw[1] or 0)}

    wait_until(lambda: sum(finished().values()) >= 8, 60, what="the workers to get going")
    before = finished()
    for _ in ticks(60, 1.0):
        assert redis_conn.zcard(keys.leases_key(SCOPE)) <= 1  # the limit holds throughout
    after = finished()
    heavy, light = (after[t] - before[t] for t in ("share_heavy", "share_light"))
    print(f"over 60 s: share_heavy (weight 3) {heavy} jobs, share_light (weight 1) {light}")
    assert light >= 20, (heavy, light, workers.logs())  # enough jobs ran for a ratio to mean something
    assert heavy <= BACKLOG - before["share_heavy"] - 10  # neither backlog ran dry in the window
    assert light <= BACKLOG - before["share_light"] - 10
    assert 2.4 <= heavy / light <= 3.6, (heavy, light)
