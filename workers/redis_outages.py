"""Riding out a Redis outage: rq's loop quits on the first connection error; easeoff waits and goes on.

While Redis is away a worker backs off (doubling, capped) and retries, keeps its place, and
picks up where it left off; what Redis missed of a job's ending, the abandoned-job sweep
settles from the started registry.
"""

from __future__ import annotations

import random
import time
from typing import Any

from redis import Redis
from redis.exceptions import ReadOnlyError
from rq import Worker

from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.sentinel import look_for_promotion

# Retries back off to this and no further: a Sentinel failover comes back on its own clock
# (about 2 s after the primary's death with `down-after-milliseconds` 1000), and a retry
# doubled past it overshoots the promotion by as much again (3.1 s recovery with a 60 s cap).
# A refused connection costs the sentinels and the primary next to nothing.
RETRY_CAP = 0.5


class RidesOutRedisOutages(Worker):
    _state_in_redis: str | None  # the worker's state as last written on its own, if known (GatedWorker.set_state)

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
        """Back off (doubling from a tenth of a second to RETRY_CAP, jittered so a fleet does not
        knock in step) until Redis answers again, instead of quitting: a Sentinel failover or a
        restart takes seconds, and the first retries catch it."""
        wait = 0.1
        while True:
            self.log.error("Worker %s: Redis unreachable (%s); retrying in %.1fs", self.name, exc, wait)
            time.sleep(wait * random.uniform(0.8, 1.0))
            promoted = look_for_promotion(self.connection)
            if promoted is not None:
                self.log.warning("Worker %s: going to the promoted replica %s:%d", self.name, *promoted)
            try:
                if isinstance(exc, ReadOnlyError):  # a replica answers PING: back is a primary again
                    if not is_primary(self.connection):
                        raise ReadOnlyError("still a replica")
                else:
                    self.connection.ping()
                self.log.warning("Worker %s: Redis is back", self.name)
                self._state_in_redis = None  # a restarted Redis may have lost the worker's hash
                return
            except REDIS_UNREACHABLE as again:
                exc, wait = again, min(wait * 2, RETRY_CAP, float(self.max_connection_wait_time))


def is_primary(redis: Redis) -> bool:
    """Whether the server takes writes (ROLE says master): after a failover a client still on the
    old primary, now a replica, is answered reads and refused every write."""
    role = redis.execute_command("ROLE")
    name = role[0] if isinstance(role, list | tuple) and role else role
    return (name.decode() if isinstance(name, bytes) else str(name)) == "master"
