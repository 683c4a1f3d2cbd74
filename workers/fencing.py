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
    watch: Callable[..., Any] = pipe.watch
    execute: Callable[..., list[Any]] = pipe.execute

    def check() -> None:
        owner = pipe.immediate_execute_command("GET", fence.key)
        if _text(owner) != fence.owner:
            pipe.reset()
            raise FencedOut(fence)

    def fenced_watch(*names: Any) -> Any:
        result = watch(fence.key, *names)
        check()
        return result

    def fenced_execute(raise_on_error: bool = True) -> list[Any]:
        if not pipe.watching:
            watch(fence.key)
            check()
        result: list[Any] = execute(raise_on_error)
        return result

    pipe.watch = fenced_watch  # type: ignore[method-assign]
    pipe.execute = fenced_execute  # type: ignore[method-assign]
    return pipe


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
