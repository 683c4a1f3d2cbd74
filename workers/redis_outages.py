"""Riding out a Redis outage: rq's loop quits on the first connection error; easeoff waits and goes on.

While Redis is away a worker backs off (doubling, capped) and retries, keeps its place, and
picks up where it left off; what Redis missed of a job's ending, the abandoned-job sweep
settles from the started registry.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Worker

from easeoff.feedback.connect import REDIS_UNREACHABLE


class RidesOutRedisOutages(Worker):
    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_UNREACHABLE as exc:
            self._wait_for_redis(exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline=pipeline)
        except REDIS_UNREACHABLE as exc:
            if pipeline is not None:
                raise
            self._wait_for_redis(exc)

    def _wait_for_redis(self, exc: BaseException) -> None:
        """Back off (doubling from a tenth of a second, capped) until Redis answers again, instead of
        quitting: a Sentinel failover or a restart takes seconds, and the first retries catch it."""
        wait = 0.1
        while True:
            self.log.error("Worker %s: Redis unreachable (%s); retrying in %.1fs", self.name, exc, wait)
            time.sleep(wait)
            try:
                self.connection.ping()
                self.log.warning("Worker %s: Redis is back", self.name)
                return
            except REDIS_UNREACHABLE as again:
                exc, wait = again, min(wait * 2, float(self.max_connection_wait_time))
