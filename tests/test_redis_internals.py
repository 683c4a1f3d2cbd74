"""Each call feedback/redis_internals.py makes into redis-py's internals, tested by name: an
upgrade that moves one fails here, with the call's name, not in a job."""

from __future__ import annotations

import inspect
import os

import pytest
from redis import Redis
from redis.client import Pipeline
from rq import Worker

from easeoff.feedback import redis_internals
from easeoff.feedback.config import load_config
from easeoff.feedback.connect import SOCKET_TIMEOUT, connect
from easeoff.feedback.replica_acks import AckedPipeline, AckedRedis
from easeoff.workers.fencing import Fence
from easeoff.workers.worker_parts import FencedClient, raw_client
from tests.conftest import TEST_REDIS_URL


def test_set_socket_timeout_is_what_rqs_set_connection_changes(write_config) -> None:  # type: ignore[no-untyped-def]
    """rq's `Worker._set_connection` writes the pool's `connection_kwargs["socket_timeout"]`."""
    config = load_config(write_config())
    client = connect(config)
    Worker(["heavy"], connection=client)  # plain rq: raises it to dequeue timeout + 10 s
    assert (redis_internals.socket_timeout(client) or 0) > 60
    redis_internals.set_socket_timeout(client, SOCKET_TIMEOUT)
    assert redis_internals.socket_timeout(client) == SOCKET_TIMEOUT
    assert client.connection_pool.make_connection().socket_timeout == SOCKET_TIMEOUT
    assert "_set_connection" in dict(inspect.getmembers(Worker))


def test_raw_client_sees_through_the_fenced_view(redis_conn: Redis) -> None:
    view = FencedClient(redis_conn, Fence("j", 1, "e"))
    assert raw_client(view) is redis_conn
    assert raw_client(redis_conn) is redis_conn


def test_an_adopted_connection_is_the_first_its_pool_hands_out() -> None:
    connection = Redis.from_url(TEST_REDIS_URL).connection_pool.make_connection()
    connection.connect()
    fresh = Redis.from_url(TEST_REDIS_URL)
    redis_internals.adopt_connection(fresh.connection_pool, connection)
    assert fresh.connection_pool.get_connection() is connection
    assert connection.pid == os.getpid()


def test_a_disowned_socket_is_closed_here_without_a_shutdown() -> None:
    """redis-py's `disconnect` shuts a socket down only in the process that owns it (`pid`)."""
    pool = Redis.from_url(TEST_REDIS_URL).connection_pool
    connection = pool.make_connection()
    connection.connect()
    redis_internals.disown_socket(connection, os.getpid() + 1)
    connection.disconnect()
    assert connection.pid == os.getpid() + 1 and connection._sock is None


@pytest.mark.unit
def test_every_overridden_method_is_still_redis_pys_with_its_parameters() -> None:
    for base, methods in redis_internals.OVERRIDDEN.items():
        for name, parameters in methods.items():
            assert hasattr(base, name), f"redis-py's {base.__name__}.{name} is gone"
            assert tuple(inspect.signature(getattr(base, name)).parameters) == parameters, name


@pytest.mark.unit
def test_the_overrides_listed_are_every_private_redis_py_method_easeoff_overrides() -> None:
    listed = {name for methods in redis_internals.OVERRIDDEN.values() for name in methods}
    overridden = {
        name
        for cls in (*AckedRedis.__mro__, *AckedPipeline.__mro__)
        if cls.__module__.startswith("easeoff")
        for name in vars(cls)
        if name.startswith("_")
        and not name.startswith("__")
        and callable(vars(cls)[name])
        and any(hasattr(b, name) for b in (Redis, Pipeline))
    }
    assert overridden == listed
