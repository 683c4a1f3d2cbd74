"""A work horse's Redis connection, opened by its worker before the fork (workers/horse_connection.py):
on real Redis, across a real fork."""

from __future__ import annotations

import os

import pytest
from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from easeoff.workers.horse_connection import adopt, let_go, open_for_horse

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
