"""The calls into redis-py's internals that easeoff makes, in one place.

Read from redis-py 8.2.0 (scripts/constraints.txt pins it). Each has a test by name in
tests/test_redis_internals.py, so an upgrade that moves one fails there, not in a job.
"""

from __future__ import annotations

import os
from typing import Any

from redis import ConnectionPool, Redis
from redis.client import Pipeline
from redis.connection import AbstractConnection

# The private methods easeoff's classes override (feedback/replica_acks.py: a write waits for
# its replicas' acknowledgements), each with the parameters it is called with.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    Redis: {"_send_command_parse_response": ("self", "conn", "command_name", "args", "options")},
    Pipeline: {
        "_execute_transaction": ("self", "connection", "commands", "raise_on_error"),
        "_execute_pipeline": ("self", "connection", "commands", "raise_on_error"),
    },
}


def pool_options(client: Redis) -> dict[str, Any]:
    """The options the client's pool makes each connection with (the URL's and the caller's)."""
    options: dict[str, Any] = client.connection_pool.connection_kwargs
    return options


def set_socket_timeout(client: Redis, seconds: float) -> None:
    """The pool's socket timeout for every connection it makes from now on. rq's
    `Worker._set_connection` raises it to the dequeue timeout + 10 s in the same dict."""
    pool_options(client)["socket_timeout"] = seconds


def socket_timeout(client: Redis) -> float | None:
    timeout = pool_options(client).get("socket_timeout")
    return float(timeout) if timeout else None


def adopt_connection(pool: ConnectionPool, connection: AbstractConnection) -> None:
    """Make `connection` the first `pool` hands out, counted as made by it. redis-py has no public
    way to put a connection into a pool: its fork reset first (no connections, this pid), then the
    connection as the pool's one."""
    pool._checkpid()
    connection.pid = os.getpid()
    with pool._lock:
        pool._available_connections.append(connection)
        pool._created_connections += 1


def disown_socket(connection: AbstractConnection, owner_pid: int) -> None:
    """Mark the connection as another process's: redis-py's `disconnect` then closes this process's
    descriptor without the shutdown that would end the other process's use of the socket too."""
    connection.pid = owner_pid
