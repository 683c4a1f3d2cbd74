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

It also tells whether the run may have *committed* anything (`committed_since`): a deadlock or a
lock-wait timeout rolls back the failing transaction, so a run that committed nothing before it
is safe to retry whatever its task (workers/transient_errors.py). Seen as a commit: pymysql's
`commit()`, a `COMMIT` statement, and any statement other than a read (SELECT, SHOW) on a
connection in autocommit mode (the server's word, from its last reply: no round trip). Counted
on the job's own thread (the one that took the mark) only: an in-process worker's probes write
their heartbeat rows in autocommit on threads beside the job. Not seen: a DDL's implicit commit
and writes from threads a task starts itself; such a task is not retried safely unless it is
idempotent.
"""

from __future__ import annotations

import functools
import itertools
import threading
from typing import Any

import pymysql.connections

_events = itertools.count(1)  # next() is atomic under the GIL: no lock on the connect path
_seen = 0  # the event number of the last connection made or lent
_committed = 0  # the event number of the last commit on the marking thread
_job_thread: int | None = None  # the thread that took the last mark: the running job's
_READS = (b"SELECT", b"SHOW", b"EXPLAIN", b"(SELECT")


def note_reached() -> None:
    """A connection to a server was made (or lent): from here the job may have written."""
    global _seen
    _seen = next(_events)


def note_committed() -> None:
    """The job's thread committed (or may have): from here its writes are not rolled back."""
    global _committed
    if threading.get_ident() == _job_thread:
        _committed = next(_events)


def mark() -> int:
    """Taken as a job's run begins, on its thread; `reached_since(mark)` and
    `committed_since(mark)` after it fails."""
    global _job_thread
    watch_connections()
    _job_thread = threading.get_ident()
    return next(_events)


def reached_since(mark: int) -> bool:
    return _seen > mark


def committed_since(mark: int) -> bool:
    return _committed > mark


def watch_connections() -> None:
    """Count every pymysql connection this process makes, and its commits (idempotent)."""
    cls = pymysql.connections.Connection
    if getattr(cls.connect, "_easeoff_counts", False):
        return
    original_connect, original_commit, original_query = cls.connect, cls.commit, cls.query

    @functools.wraps(original_connect)
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_connect(self, *args, **kwargs)
        note_reached()
        return result

    @functools.wraps(original_commit)
    def commit(self: Any) -> Any:
        note_committed()  # before: a commit whose reply is lost may still have been made
        return original_commit(self)

    @functools.wraps(original_query)
    def query(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        if _may_commit(self, sql):
            note_committed()
        return original_query(self, sql, *args, **kwargs)

    connect._easeoff_counts = True  # type: ignore[attr-defined]
    cls.connect = connect  # type: ignore[method-assign]
    cls.commit = commit  # type: ignore[method-assign]
    cls.query = query  # type: ignore[method-assign]


def _may_commit(conn: Any, sql: Any) -> bool:
    """A COMMIT, or a statement other than a read while the connection autocommits."""
    if threading.get_ident() != _job_thread:
        return False
    head = (sql.encode() if isinstance(sql, str) else bytes(sql))[:16].lstrip().upper()
    if head.startswith(b"COMMIT"):
        return True
    return bool(conn.get_autocommit()) and not head.startswith(_READS)
