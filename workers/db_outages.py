"""A job that died because its database was unreachable is deferred, not failed.

The gate admits a job on the last probe's word; a database that restarts or drops connections
in the seconds since then makes the task raise pymysql's OperationalError. That is strain the
probe had not seen yet, not a bug in the job: easeoff defers it (no retry spent), parked on its
resources, as if the gate had held it. A job that never reached the database (its first
connection refused, or the server full) is safe to run again whatever its task; one that had
connected before — its connection lost mid-run, or a later connection refused — is deferred only
when its task is idempotent or resumable: anything else may have applied some of its writes, and
fails with the reason as before.
"""

from __future__ import annotations

import pymysql

from easeoff.tasks.meta import JobMeta
from easeoff.tasks.retry_on import exception_chain

NEVER_REACHED = {
    1040: "too many connections",
    2002: "cannot connect (socket)",
    2003: "cannot connect",
}
LOST_MIDWAY = {
    2006: "server has gone away",
    2013: "lost connection during a query",
}


def outage_reason(exc: BaseException | None, meta: JobMeta, reached: bool = False) -> str | None:
    """Why the job should be deferred for a database outage, or None (a real failure).

    `reached`: this run had made (or borrowed) a database connection before it failed
    (tasks/db_reach.py). A refused connection then says nothing of what the earlier one wrote,
    so only a task safe to run again is deferred."""
    safe_again = meta.idempotent or meta.resumable
    for err in exception_chain(exc):
        if not isinstance(err, pymysql.err.OperationalError) or not err.args:
            continue
        code = err.args[0]
        if code in NEVER_REACHED and (not reached or safe_again):
            return f"database unreachable: {NEVER_REACHED[code]} ({code})"
        if code in LOST_MIDWAY and safe_again:
            return f"database unreachable: {LOST_MIDWAY[code]} ({code}); the task is safe to run again"
    return None
