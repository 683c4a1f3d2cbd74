"""Database connections a task borrows from its worker, reused across jobs.

A new MySQL connection made while heavy queries run costs the live queries several-fold (a
thread created, a login, TLS); short one-shot jobs that each open one cost the live site more
than their own work does. `borrow(key, connect)` hands a task the connection its worker keeps
for `key` (a shard, say), opening it on first use and again only if it went away, and rolls
back whatever a job left open. In a worker that runs jobs in its own process
(`easeoff worker --in-process`) one connection per key serves every job; in a forking worker
each job's work horse is a process of its own and its connections end with it.
The worker closes them all when it stops (`close_all`); a killed worker's die with its process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from easeoff.tasks.db_reach import note_reached

_kept: dict[str, Any] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def borrow(key: str, connect: Callable[[], Any]) -> Iterator[Any]:
    """The kept connection for `key` (a DB-API connection with `ping` and `rollback`, as
    pymysql's), the caller committing what it wants kept; on an exception, rolled back."""
    with _lock:
        conn = _kept.pop(key, None)  # one borrower at a time: a second one gets its own
    if conn is not None and not _usable(conn):
        _close(conn)
        conn = None
    if conn is None:
        conn = connect()
    note_reached()  # a kept connection may carry this job's writes as much as a new one
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:  # kept either way: one that died with the job is replaced at the next borrow
        with _lock:
            spare = _kept.pop(key, None)
            _kept[key] = conn
        if spare is not None:
            _close(spare)


def close_all() -> int:
    """Close every kept connection (the worker is stopping); returns how many."""
    with _lock:
        kept = list(_kept.values())
        _kept.clear()
    for conn in kept:
        _close(conn)
    return len(kept)


def kept() -> int:
    with _lock:
        return len(_kept)


def _usable(conn: Any) -> bool:
    """Alive (one round trip) and with no transaction a previous job left open."""
    try:
        conn.ping(reconnect=False)
        conn.rollback()
        return True
    except Exception:
        return False


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
