"""A work horse's Redis connection, opened by its worker just before the fork rather than by
the horse just after it.

A horse inherits its worker's Redis client but none of its connections: redis-py sees a new
pid and connects afresh at the horse's first command. There, in a process just forked, where
the first write to every page is a copy-on-write fault, the connect and its handshake (HELLO,
SELECT, AUTH, TLS) cost about 1.8 ms, a sixth of a no-op job's whole cost; in the warm worker,
before the fork, 0.7 ms (and closing the worker's copy 0.15 ms). The worker closes its copy of
the socket without shutting it down (redis-py's own rule for a connection another process
owns) and never touches it again: the horse is its only user.

A worker working jobs back to back opens its next horses' connections while the current horse
runs (`HorseConnections`): it only waits for the horse then, so the connect leaves the path from
one job to the next. It opens them a few at a time, since every page the worker writes while a
horse lives is a copy-on-write fault, and a batch pays for the connect code's pages once.

Only redis-py's plain `ConnectionPool` takes one. A Sentinel pool judges a connection its own
by the primary's address, which the horse's pool forgets at the fork; there the horse connects
as it does under rq.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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


AHEAD_MAX = 4  # connections a worker keeps open for its next horses
AHEAD_MAX_AGE = 10.0  # seconds one may wait for its horse; a worker whose jobs are further apart opens none ahead


class HorseConnections:
    """The connections for a worker's next horses, opened ahead while a horse runs.

    Only a worker working jobs back to back (a fork less than AHEAD_MAX_AGE after the last)
    opens ahead: one, then twice as many each time it used the last batch up, at most
    AHEAD_MAX. A batch unused for AHEAD_MAX_AGE is closed (`close_aged`, also from the idle
    loop), so an idle worker holds none, and the next batch starts at one again."""

    def __init__(self, client: Redis, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._ready: list[AbstractConnection] = []
        self._opened_at = 0.0
        self._batch = 1
        self._last_take = -AHEAD_MAX_AGE
        self._back_to_back = False

    def take(self) -> AbstractConnection | None:
        """A connection for the horse about to be forked: one opened ahead if it is still good,
        else a new one (or None, as `open_for_horse`)."""
        now = self._clock()
        self._back_to_back = now - self._last_take < AHEAD_MAX_AGE
        self._last_take = now
        self.close_aged()
        while self._ready:
            ready = self._ready.pop()
            if _unused(ready):
                return ready
            ready.disconnect()
        return open_for_horse(self._client)

    def open_ahead(self) -> None:
        """After the fork, while the horse runs: the next batch, if the last is used up."""
        if self._ready or not self._back_to_back:
            return
        for _ in range(self._batch):
            connection = open_for_horse(self._client)
            if connection is None:
                break
            self._ready.append(connection)
        self._opened_at = self._clock()
        self._batch = min(self._batch * 2, AHEAD_MAX)

    def close_aged(self) -> None:
        if self._ready and self._clock() - self._opened_at >= AHEAD_MAX_AGE:
            self.close()
            self._batch = 1

    def close(self) -> None:
        ready, self._ready = self._ready, []
        for connection in ready:
            connection.disconnect()

    def __len__(self) -> int:
        return len(self._ready)


def _unused(connection: AbstractConnection) -> bool:
    """Nothing to read on a connection no command was sent on: anything there (an EOF, an error
    for an idle client) means Redis closed it or is closing it."""
    try:
        return not connection.can_read(timeout=0)
    except Exception:  # closed under it: redis-py raises as it reads the EOF
        return False
