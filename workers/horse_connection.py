"""A work horse's Redis connection, opened by its worker just before the fork rather than by
the horse just after it.

A horse inherits its worker's Redis client but none of its connections: redis-py sees a new
pid and connects afresh at the horse's first command. There, in a process just forked, where
the first write to every page is a copy-on-write fault, the connect and its handshake (HELLO,
SELECT, AUTH, TLS) cost about 1.8 ms, a sixth of a no-op job's whole cost; in the warm worker,
before the fork, 0.7 ms (and closing the worker's copy 0.15 ms). The worker closes its copy of
the socket without shutting it down (redis-py's own rule for a connection another process
owns) and never touches it again: the horse is its only user.

Only redis-py's plain `ConnectionPool` takes one. A Sentinel pool judges a connection its own
by the primary's address, which the horse's pool forgets at the fork; there the horse connects
as it does under rq.
"""

from __future__ import annotations

import logging

from redis import ConnectionPool, Redis
from redis.connection import AbstractConnection

from easeoff.feedback import redis_internals

logger = logging.getLogger(__name__)


def open_for_horse(client: Redis) -> AbstractConnection | None:
    """A connected connection of `client`'s kind that no pool holds, or None (Redis is away, or
    the pool is not one a horse can adopt into): the horse then connects on its own."""
    pool = client.connection_pool
    if type(pool) is not ConnectionPool or getattr(pool, "cache", None) is not None:
        return None
    connection: AbstractConnection = pool.connection_class(**redis_internals.pool_options(client))
    try:
        connection.connect()
    except Exception:  # whatever stops it here would stop the horse's own connect: let the horse report it
        connection.disconnect()
        return None
    return connection


def adopt(client: Redis, connection: AbstractConnection) -> None:
    """In the horse: make `connection` the first its pool hands out. Never raises: a horse that
    cannot adopt it connects on its own (an exception here would escape into rq's worker loop,
    in the horse)."""
    try:
        redis_internals.adopt_connection(client.connection_pool, connection)
    except Exception:
        logger.warning("work horse: could not adopt the Redis connection its worker opened", exc_info=True)


def let_go(connection: AbstractConnection, horse_pid: int | None) -> None:
    """In the worker, after the fork: close its copy of the socket. With the horse's pid on it,
    redis-py closes the descriptor without the shutdown that would end the horse's use of it
    too. Without a horse (the fork failed), it is closed outright."""
    if horse_pid:
        redis_internals.disown_socket(connection, horse_pid)
    connection.disconnect()
