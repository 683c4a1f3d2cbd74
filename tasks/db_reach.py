"""Whether the running job has reached a MySQL server yet.

A refused connection (2003) or a full server (1040) says only that *that* connection never got
through. A task may already have written over an earlier one — a ledger row at its start, then
a new connection for its end while the server restarts — and running it again would apply those
writes twice. So a job counts as never having reached its database only when this run made no
MySQL connection and borrowed none from the pool before it failed (workers/db_outages.py).

pymysql's `Connection.connect` is wrapped once per process to count the connections made,
whoever opens them (the task, a library it uses, easeoff's own helpers); a kept connection lent
by tasks/pool.py counts when lent. Counting more than the job's own (a probe reconnecting on a
thread of an in-process worker) only makes the judgement stricter: the job fails with its error
rather than running twice.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pymysql.connections

_reached = itertools.count(1)  # next() is atomic under the GIL: no lock on the connect path
_seen = 0


def note_reached() -> None:
    """A connection to a server was made (or lent): from here the job may have written."""
    global _seen
    _seen = next(_reached)


def mark() -> int:
    """Taken as a job's run begins; `reached_since(mark)` after it fails."""
    watch_connections()
    return _seen


def reached_since(mark: int) -> bool:
    return _seen > mark


def watch_connections() -> None:
    """Count every pymysql connection this process makes (idempotent)."""
    cls = pymysql.connections.Connection
    if getattr(cls.connect, "_easeoff_counts", False):
        return
    original = cls.connect

    @functools.wraps(original)
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        note_reached()
        return result

    connect._easeoff_counts = True  # type: ignore[attr-defined]
    cls.connect = connect  # type: ignore[method-assign]
