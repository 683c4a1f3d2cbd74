"""Which errors a task's job is retried for: `@heavy_task(..., retry_on=(...), retries=3)`.

The commonest failure of a heavy write is not a bug but a collision: a MySQL deadlock (1213)
or a lock-wait timeout (1205), which the server settles by rolling the failing transaction (or
statement) back, and which the same job run again a moment later usually gets through. So a
task names the errors that are worth another try: MySQL error codes (ints) and exception
classes. By default, `DEFAULT_RETRY_ON`: deadlock, lock-wait timeout and a connection lost
mid-job (2013, 2006). `retry_on=()` retries nothing.

Whether a matching failure is retried also depends on what the run may have applied: the rule
lives with the worker (workers/transient_errors.py). This module only declares and matches.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import msgspec

RetryOn = int | type[BaseException]

DEADLOCK, LOCK_WAIT = 1213, 1205
GONE_AWAY, LOST = 2006, 2013
# Errors whose failing transaction (or statement) the server has rolled back, by code.
ROLLED_BACK = {DEADLOCK: "deadlock", LOCK_WAIT: "lock_wait_timeout"}
CONNECTION_LOST = {GONE_AWAY: "connection_lost", LOST: "connection_lost"}
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = (DEADLOCK, LOCK_WAIT, LOST, GONE_AWAY)
DEFAULT_RETRIES = 3


class TransientError(msgspec.Struct, frozen=True):
    """A failure that matched the task's `retry_on`."""

    label: str  # what it is counted under: deadlock, lock_wait_timeout, connection_lost, or the class
    rolled_back: bool  # the server undid the failing transaction: nothing of it was applied
    text: str  # one line for people: the error as the driver said it


def checked_retry_on(spec: object) -> tuple[RetryOn, ...]:
    """A tuple of MySQL error codes and exception classes; ValueError names what is wrong."""
    if isinstance(spec, int | type):
        spec = (spec,)
    if isinstance(spec, str | bytes) or not isinstance(spec, Iterable):
        raise ValueError(f"retry_on={spec!r}: give a tuple of MySQL error codes and exception classes")
    items: list[RetryOn] = []
    for item in spec:
        if isinstance(item, bool) or not (
            (isinstance(item, int) and item > 0) or (isinstance(item, type) and issubclass(item, BaseException))
        ):
            raise ValueError(f"retry_on item {item!r}: not a MySQL error code (like 1213) nor an exception class")
        items.append(item)
    return tuple(items)


def checked_retries(retries: object) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries={retries!r}: must be a whole number of retries, 0 or more")
    return retries


def matching(exc: BaseException | None, retry_on: Iterable[RetryOn]) -> TransientError | None:
    """The first error in `exc`'s chain (a task may wrap the driver's) that `retry_on` names."""
    codes = {item for item in retry_on if isinstance(item, int)}
    classes = tuple(item for item in retry_on if isinstance(item, type))
    for err in exception_chain(exc):
        code = _mysql_code(err)
        if code is not None and code in codes:
            label = ROLLED_BACK.get(code) or CONNECTION_LOST.get(code) or f"mysql_{code}"
            return TransientError(label, code in ROLLED_BACK, _one_line(err))
        if classes and isinstance(err, classes):
            return TransientError(type(err).__name__, False, _one_line(err))
    return None


def _mysql_code(err: BaseException) -> int | None:
    # pymysql is not imported here: the CLI loads this module, and a pymysql.py in the folder it
    # runs from must not be (tests/test_cli_imports.py). A pymysql error comes with pymysql loaded.
    driver_errors = sys.modules.get("pymysql.err")
    if driver_errors is None or not isinstance(err, driver_errors.MySQLError):
        return None
    return err.args[0] if err.args and isinstance(err.args[0], int) else None


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return " ".join(text.split())[:300]


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and those it was raised from or during (a task may wrap the driver's)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
