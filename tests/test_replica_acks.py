"""`[redis] replica_acks` on the suite's Redis, which has no replica: every write waits for one
and fails in time, naming the option; reads never wait."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from easeoff.feedback.config import parse_config
from easeoff.feedback.connect import REDIS_UNREACHABLE, connect
from easeoff.feedback.replica_acks import ReplicaAckTimeout
from easeoff.workers.gated_worker import GatedWorker
from tests.conftest import TEST_REDIS_URL


@pytest.fixture
def acked():  # type: ignore[no-untyped-def]
    config = parse_config(
        f'[redis]\nurl = "{TEST_REDIS_URL}"\nreplica_acks = 1\nreplica_ack_timeout = 0.05\n', "acks.toml", {}
    )
    plain = Redis.from_url(TEST_REDIS_URL)  # cleans up without waiting for a replica
    plain.delete("easeoff:test:acks")
    yield connect(config)
    plain.delete("easeoff:test:acks")


def test_a_write_no_replica_acknowledges_fails_as_redis_unreachable(acked) -> None:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    with pytest.raises(ReplicaAckTimeout, match="0 of 1 replicas acknowledged a SET within 50 ms"):
        acked.set("easeoff:test:acks", "1")
    assert time.monotonic() - began >= 0.04  # it waited for the replica, then gave up
    assert acked.get("easeoff:test:acks") == b"1"  # the primary holds it: the caller is told it may not last
    assert issubclass(ReplicaAckTimeout, REDIS_UNREACHABLE)


def test_transactions_and_scripts_wait_reads_do_not(acked) -> None:  # type: ignore[no-untyped-def]
    with acked.pipeline() as pipe:
        pipe.incr("easeoff:test:acks")
        pipe.expire("easeoff:test:acks", 60)
        with pytest.raises(ReplicaAckTimeout, match="MULTI/EXEC"):
            pipe.execute()
    with pytest.raises(ReplicaAckTimeout, match="EVAL"):
        acked.eval("return redis.call('INCR', KEYS[1])", 1, "easeoff:test:acks")
    began = time.monotonic()
    with acked.pipeline() as pipe:
        pipe.get("easeoff:test:acks")
        pipe.ttl("easeoff:test:acks")
        assert pipe.execute()[0] == b"2"
    assert acked.llen("rq:queue:none") == 0
    assert time.monotonic() - began < 0.04


@pytest.mark.timeout(20)  # a client left waiting would wait for a replica that never comes
def test_a_worker_built_on_an_apps_client_leaves_it_failing_fast(acked) -> None:  # type: ignore[no-untyped-def]
    """rq's `Worker.all()` builds workers on whatever client it is given: only a worker that
    starts working makes its client wait out unacknowledged writes, never one merely built."""
    config = parse_config(f'[redis]\nurl = "{TEST_REDIS_URL}"\nreplica_acks = 1\n', "acks.toml", {})
    GatedWorker(["heavy"], connection=acked, config=config)
    with pytest.raises(ReplicaAckTimeout):
        acked.set("easeoff:test:acks", "1")
