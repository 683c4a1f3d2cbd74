"""Waiting for replicas to acknowledge each write (`[redis] replica_acks`), so a job move the
primary confirmed survives the primary's death.

Redis replicates asynchronously: a job enqueued, claimed or finished on the primary and lost
with it before the replica copied it is gone after a Sentinel failover (an enqueue the app
was told succeeded, a finish the replica never saw). With `replica_acks = N`, every write a
client sends — each transaction, each script, each plain write — is followed on the same
connection by `WAIT N timeout`, and the caller goes on only once N replicas hold it. A
replica that does not answer within `replica_ack_timeout` raises ReplicaAckTimeout, an
unreachable-Redis error: an app's enqueue sees it fail and can retry (the job may then exist
twice; an unacknowledged move is never silently taken for done). Workers' clients wait on
instead (`keep_waiting`): a worker's move is already made on the primary and cannot be taken
back, so failing it would only strand the job (a horse that raised at its finishing
transaction would have its finished job reported failed); the worker holds until a replica
has the move, or the primary dies and the move is ridden out as an outage. The cost is one
replica round trip per write; `scripts/bench/replica_acks.py` measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from redis import Redis
from redis.client import Pipeline

# Commands that change data, as rq and easeoff send them: a transaction or script may hold any.
WRITES = frozenset(
    {
        "EXEC", "EVAL", "EVALSHA", "FCALL", "DEL", "UNLINK", "SET", "SETEX", "PSETEX", "SETNX", "GETDEL",
        "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT",
        "PERSIST", "RENAME", "HSET", "HMSET", "HSETNX", "HDEL", "HINCRBY", "HINCRBYFLOAT", "LPUSH",
        "RPUSH", "LPOP", "RPOP", "BLPOP", "BRPOP", "LMOVE", "BLMOVE", "RPOPLPUSH", "BRPOPLPUSH",
        "LREM", "LSET", "LTRIM", "LINSERT", "SADD", "SREM", "SPOP", "SMOVE", "ZADD", "ZREM",
        "ZINCRBY", "ZPOPMIN", "ZPOPMAX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "XADD", "XTRIM",
    }
)  # fmt: skip

log = logging.getLogger(__name__)


class ReplicaAckTimeout(redis.exceptions.ConnectionError):
    """Fewer replicas than asked acknowledged a write in time: the primary holds it, no replica
    may, and a failover now could lose it."""


class _AwaitsReplicas:
    replica_acks: int = 0
    replica_ack_timeout_ms: int = 1000
    keeps_waiting: bool = False

    def _await_replicas(self, conn: Any, command: str) -> None:
        waited = 0
        while True:
            conn.send_command("WAIT", self.replica_acks, self.replica_ack_timeout_ms)
            acked = int(conn.read_response())
            if acked >= self.replica_acks:
                return
            waited += self.replica_ack_timeout_ms
            message = (
                f"{acked} of {self.replica_acks} replicas acknowledged a {command} within "
                f"{waited} ms ([redis] replica_acks, replica_ack_timeout)"
            )
            if not self.keeps_waiting:
                raise ReplicaAckTimeout(message)
            log.warning("%s; waiting on: the primary holds it", message)

    def _send_command_parse_response(self, conn: Any, command_name: str, *args: Any, **options: Any) -> Any:
        response = super()._send_command_parse_response(conn, command_name, *args, **options)  # type: ignore[misc]
        if _name(command_name) in WRITES:
            self._await_replicas(conn, _name(command_name))
        return response


class AckedPipeline(_AwaitsReplicas, Pipeline):
    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        data: list[Any] = super()._execute_transaction(connection, commands, raise_on_error)
        if _writes(commands):
            self._await_replicas(connection, "MULTI/EXEC")
        return data

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        data: list[Any] = super()._execute_pipeline(connection, commands, raise_on_error)  # type: ignore[no-untyped-call]
        if _writes(commands):
            self._await_replicas(connection, "pipeline")
        return data


class AckedRedis(_AwaitsReplicas, Redis):
    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = AckedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.replica_acks, pipe.replica_ack_timeout_ms = self.replica_acks, self.replica_ack_timeout_ms
        pipe.keeps_waiting = self.keeps_waiting
        return pipe


def awaiting_replicas(client: AckedRedis, acks: int, timeout: float) -> AckedRedis:
    client.replica_acks, client.replica_ack_timeout_ms = acks, max(1, round(timeout * 1000))
    return client


def keep_waiting(client: Redis, keep: bool = True) -> None:
    """A worker's client: a write no replica acknowledged in time waits on rather than failing
    (nothing to do for a client that does not wait for replicas)."""
    if isinstance(client, AckedRedis):
        client.keeps_waiting = keep


def _name(command: Any) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()


def _writes(commands: Iterable[tuple[tuple[Any, ...], Any]]) -> bool:
    return any(_name(args[0]) in WRITES for args, _ in commands)
