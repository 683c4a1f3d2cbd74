"""A work horse's Redis connection, opened by its worker before the fork (workers/horse_connection.py):
on real Redis, across a real fork."""

from __future__ import annotations

import os

import pytest
from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from easeoff.workers.horse_connection import AHEAD_MAX_AGE, HorseConnections, adopt, let_go, open_for_horse

from .conftest import TEST_REDIS_URL, wait_until


def _connected_ids(client: Redis) -> set[int]:
    return {int(c["id"]) for c in client.client_list()}


def test_the_horse_talks_over_the_connection_its_worker_opened_and_the_worker_keeps_its_own() -> None:
    worker = Redis.from_url(TEST_REDIS_URL)
    observer = Redis.from_url(TEST_REDIS_URL)
    worker_id = worker.client_id()
    handed = open_for_horse(worker)
    assert handed is not None
    handed.send_command("CLIENT", "ID")
    handed_id = int(handed.read_response())
    assert handed_id != worker_id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the horse: adopt, then two commands (the second on the connection released back to the pool)
        try:
            adopt(worker, handed)
            os.write(write_end, f"{worker.client_id()} {worker.client_id()}".encode())
        finally:
            os._exit(0)
    let_go(handed, pid)
    _, status = os.waitpid(pid, 0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as horse_said:
        horse_ids = [int(i) for i in horse_said.read().split()]
    assert os.waitstatus_to_exitcode(status) == 0
    assert horse_ids == [handed_id, handed_id], "the horse connected on its own, or lost the handed connection"
    assert worker.client_id() == worker_id, "the worker's own connection was disturbed"
    # Neither side leaks it: the worker closed its copy, and the horse's ended with the horse.
    wait_until(lambda: handed_id not in _connected_ids(observer), timeout=10, what="the handed connection to close")
    worker.close()
    observer.close()


@pytest.mark.unit
def test_a_pool_a_horse_cannot_adopt_into_gets_no_connection() -> None:
    blocking = Redis(connection_pool=BlockingConnectionPool.from_url(TEST_REDIS_URL))
    assert open_for_horse(blocking) is None
    blocking.close()


def test_with_redis_away_the_horse_is_left_to_connect_on_its_own() -> None:
    away = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    assert open_for_horse(away) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _id_of(connection: AbstractConnection) -> int:
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


def _fork_cycle(connections: HorseConnections, clock: _Clock, step: float) -> AbstractConnection:
    """What the worker does around a fork: take the horse's connection, then open ahead."""
    clock.now += step
    handed = connections.take()
    assert handed is not None
    connections.open_ahead()
    return handed


def test_a_worker_working_back_to_back_hands_its_horses_connections_opened_ahead_in_growing_batches() -> None:
    worker = Redis.from_url(TEST_REDIS_URL)
    clock = _Clock()
    connections = HorseConnections(worker, clock)
    first = _fork_cycle(connections, clock, 0.0)
    assert len(connections) == 0, "a first job is no sign of jobs back to back: nothing opened ahead"
    lengths = []
    handed_from_stock = 0
    for _ in range(8):
        stocked = {_id_of(c) for c in connections._ready}
        handed = _fork_cycle(connections, clock, 0.05)
        handed_from_stock += _id_of(handed) in stocked
        handed.disconnect()
        lengths.append(len(connections))
    # Refilled once used up: 1, then 2, then 4 (the most) at a time.
    assert lengths == [1, 2, 1, 4, 3, 2, 1, 4]
    assert handed_from_stock == 7, "a horse got a new connection while one opened ahead waited"
    stocked = {_id_of(c) for c in connections._ready}
    assert _id_of(first) not in stocked
    first.disconnect()
    connections.close()
    worker.close()


def test_connections_opened_ahead_and_left_unused_are_closed_once_aged_and_the_batch_starts_small_again() -> None:
    worker = Redis.from_url(TEST_REDIS_URL)
    observer = Redis.from_url(TEST_REDIS_URL)
    clock = _Clock()
    connections = HorseConnections(worker, clock)
    for _ in range(5):
        _fork_cycle(connections, clock, 0.05).disconnect()
    ahead = [_id_of(c) for c in connections._ready]
    assert len(ahead) == 4, "not the batch of 4 the fifth job back to back opens"
    clock.now += AHEAD_MAX_AGE - 0.1
    connections.close_aged()
    assert len(connections) == 4, "closed before its age"
    clock.now += 0.2
    connections.close_aged()  # the idle worker's loop
    assert len(connections) == 0
    wait_until(lambda: not set(ahead) & _connected_ids(observer), timeout=10, what="the aged connections to close")
    _fork_cycle(connections, clock, 0.05).disconnect()  # the first job after the idle spell
    assert len(connections) == 0
    _fork_cycle(connections, clock, 0.05).disconnect()  # back to back again: one ahead, not four
    assert len(connections) == 1
    connections.close()
    worker.close()
    observer.close()


def test_jobs_further_apart_than_a_connection_may_wait_open_none_ahead() -> None:
    worker = Redis.from_url(TEST_REDIS_URL)
    clock = _Clock()
    connections = HorseConnections(worker, clock)
    for _ in range(3):
        _fork_cycle(connections, clock, AHEAD_MAX_AGE + 1).disconnect()
        assert len(connections) == 0
    worker.close()


def test_a_connection_opened_ahead_that_redis_closed_is_not_handed_to_a_horse() -> None:
    worker = Redis.from_url(TEST_REDIS_URL)
    observer = Redis.from_url(TEST_REDIS_URL)
    clock = _Clock()
    connections = HorseConnections(worker, clock)
    for _ in range(2):
        _fork_cycle(connections, clock, 0.05).disconnect()
    (ahead,) = connections._ready
    ahead_id = _id_of(ahead)
    observer.client_kill_filter(_id=ahead_id)
    wait_until(lambda: ahead_id not in _connected_ids(observer), timeout=10, what="Redis to close it")
    handed = connections.take()
    assert handed is not None
    assert _id_of(handed) != ahead_id
    handed.disconnect()
    connections.close()
    worker.close()
    observer.close()
