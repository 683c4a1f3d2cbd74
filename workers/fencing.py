"""Fenced executions: each claim's token, and rq's own transactions made to check it.

The claim (workers/lua/claim.lua) gives each execution the fleet's next fencing number and
writes `token:execution` under the job's owner key. Our scripts check that key inside
themselves (heartbeat, defer, fail, sweep). rq's own moves — preparing the job, ending it
(finished, failed, retried, stopped) — are MULTI/EXEC transactions rq builds itself; `arm`
makes such a pipeline WATCH the owner key and read it before its EXEC, so a transaction of an
execution that lost the job (swept while its worker or Redis was stalled) is refused whole:
`FencedOut` before it is sent, or rq's WatchError if the key changes in between. Nothing of a
fenced owner's end is recorded; the job stays wherever its new owner or the sweep put it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.client import Pipeline
from redis.exceptions import ConnectionError, TimeoutError

from easeoff.feedback.keys import owner_key


class Fence(msgspec.Struct, frozen=True):
    """One execution's claim on its job: the fencing number and the execution it was issued to."""

    job_id: str
    token: int
    execution_id: str

    @property
    def key(self) -> str:
        return owner_key(self.job_id)

    @property
    def owner(self) -> str:
        """The owner key's value while this execution owns the job."""
        return f"{self.token}:{self.execution_id}"


class FencedOut(Exception):
    """This execution no longer owns its job: another claimed it, or the sweep took it."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(f"job {fence.job_id}: execution {fence.execution_id} (token {fence.token}) was fenced out")
        self.fence = fence


def arm(pipe: Pipeline, fence: Fence) -> Pipeline:
    """Make `pipe`'s transaction commit only while `fence` owns the job (see the module's doc)."""
    if pipe.__dict__.get("transaction") is False:
        return pipe
    execute: Callable[..., list[Any]] = pipe.execute

    def fenced_watch(*names: Any) -> bool:
        if _text(_watch_and_read(pipe, fence.key, names)) != fence.owner:
            pipe.reset()
            raise FencedOut(fence)
        return True

    def fenced_execute(raise_on_error: bool = True) -> list[Any]:
        if not pipe.watching:
            fenced_watch()
        return execute(raise_on_error)

    pipe.watch = fenced_watch  # type: ignore[method-assign]
    pipe.execute = fenced_execute  # type: ignore[method-assign]
    return pipe


def _watch_and_read(pipe: Pipeline, key: str, names: tuple[Any, ...]) -> Any:
    """WATCH the owner key (and `names`) and read it, in one round trip on the pipeline's
    connection: a fenced job move costs one round trip more than rq's, not two."""
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = pipe.connection_pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands([("WATCH", key, *names), ("GET", key)]))
        conn.read_response()
        owner = conn.read_response()
    except (ConnectionError, TimeoutError):
        conn.disconnect()
        pipe.reset()
        raise
    pipe.watching = True
    return owner


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
