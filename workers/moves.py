"""Every move of a job between rq's places, each one Lua script (so, one atomic step).

rq's own dequeue is not enough here: with several queues it LPOPs a job id and only
later records the execution, so a worker killed in between loses the job; with one
queue the job waits in an intermediate list that is failed, not requeued, a minute
later. `claim` pops and records the execution in one step instead, and `defer` and
`promote` move jobs between started, scheduled and the queue the same way. A job is
therefore always in exactly one place: queue, started, scheduled, finished or failed.

The scripts name the keys of jobs they pop, which they cannot know beforehand, so
they need a single Redis node (not Redis Cluster), as rq itself does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import WatchError
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from easeoff.feedback.cooldown import COOLDOWN_PREFIX, PARKED_PREFIX, parked_key
from easeoff.feedback.counters import counter_field, counter_key, reason_kind
from easeoff.feedback.limits import LEASES_KEY, LIMIT_KEY, SLOT_WAITS_KEY
from easeoff.tasks.registry import META_KEY

CLAIM = """
-- KEYS: queue key, started-registry key, in pairs, in priority order
-- ARGV: worker name, execution id, now (unix), ttl, now (rq's UTC text), job prefix,
--       execution prefix, executions-registry prefix, worker executions key
local worker, exec_id, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS, 2 do
  local job_id = redis.call('LPOP', KEYS[i])
  while job_id do
    local job_key = ARGV[6] .. job_id
    if redis.call('EXISTS', job_key) == 1 then
      local composite = job_id .. ':' .. exec_id
      local exec_key = ARGV[7] .. composite
      redis.call('HSET', exec_key, 'id', exec_id, 'job_id', job_id, 'created_at', now,
                 'last_heartbeat', now, 'worker_name', worker)
      redis.call('EXPIRE', exec_key, ttl)
      local runs = ARGV[8] .. job_id
      redis.call('ZADD', runs, now + ttl + 60, exec_id)
      redis.call('EXPIRE', runs, ttl + 60)
      redis.call('ZADD', KEYS[i + 1], now + ttl, composite)
      redis.call('SADD', ARGV[9], composite)
      redis.call('EXPIRE', ARGV[9], ttl + 60)
      redis.call('HSET', job_key, 'status', 'started', 'worker_name', worker,
                 'started_at', ARGV[5], 'last_heartbeat', ARGV[5])
      redis.call('PERSIST', job_key)
      return {i, job_id}
    end
    job_id = redis.call('LPOP', KEYS[i])
  end
end
return false
"""

DEFER = """
-- KEYS: started registry, scheduled registry, job, execution, executions registry,
--       worker executions, deferral counter, then the parked index of each resource
-- ARGV: execution composite key, execution id, job id, due (unix), meta, parked member,
--       counter fields...
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0  -- no longer ours: cleanup already moved the job on
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[3], 'status', 'scheduled', 'meta', ARGV[5])
redis.call('HDEL', KEYS[3], 'worker_name', 'started_at')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
for i = 8, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[6])
end
for i = 7, #ARGV do
  redis.call('HINCRBY', KEYS[7], ARGV[i], 1)
end
return 1
"""

# Shared by PROMOTE and RELEASE: move one due job from scheduled to its queue, unless a
# resource it touches is cooling, in which case it is re-parked until the cool-down ends.
TRY_PROMOTE = """
-- The scopes a job waits on (its resources and its task), and when its deferral cap ends parking (0: never).
local function parking_info(job_key)
  local meta = redis.call('HGET', job_key, 'meta')
  if not meta then return {}, 0 end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' or type(decoded['easeoff']) ~= 'table' then return {}, 0 end
  local info = decoded['easeoff']
  local list = {}
  if type(info['resources']) == 'table' then
    for _, r in ipairs(info['resources']) do list[#list + 1] = r end
  end
  if type(info['task']) == 'string' then list[#list + 1] = 'task:' .. info['task'] end  -- a paused task
  local expires = tonumber(info['expires_at']) or 0
  return list, expires
end

local function try_promote(scheduled_key, queue_key, queue_name, job_id, now, job_prefix, cool_prefix, park_prefix)
  local job_key = job_prefix .. job_id
  local member = job_id .. '|' .. queue_name
  if redis.call('EXISTS', job_key) == 0 then
    redis.call('ZREM', scheduled_key, job_id)
    return 0
  end
  local resources, expires = parking_info(job_key)
  local wait = 0
  if expires == 0 or now < expires then  -- past its cap: back to a worker, to be failed with the reason
    for _, r in ipairs(resources) do
      local ttl = redis.call('PTTL', cool_prefix .. r)
      if ttl > wait then wait = ttl end
    end
  end
  if wait > 0 then
    -- Parked until its resource clears (release moves it at once) or its cap ends parking;
    -- re-checking it sooner would only churn.
    local due = now + 86400
    if expires > 0 and expires < due then due = expires end
    redis.call('ZADD', scheduled_key, due, job_id)
    for _, r in ipairs(resources) do
      if redis.call('PTTL', cool_prefix .. r) > 0 then
        redis.call('ZADD', park_prefix .. r, due, member)
      end
    end
    return 0
  end
  redis.call('ZREM', scheduled_key, job_id)
  for _, r in ipairs(resources) do
    redis.call('ZREM', park_prefix .. r, member)
  end
  redis.call('HSET', job_key, 'status', 'queued')
  redis.call('RPUSH', queue_key, job_id)
  return 1
end
"""

PROMOTE = (
    TRY_PROMOTE
    + """
-- KEYS: scheduled-registry key, queue key, in pairs
-- ARGV: now (unix), most per queue, job prefix, cooldown prefix, parked prefix, queue names...
local now = tonumber(ARGV[1])
local moved = 0
for i = 1, #KEYS, 2 do
  local queue_name = ARGV[5 + (i + 1) / 2]
  local ids = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, job_id in ipairs(ids) do
    moved = moved + try_promote(KEYS[i], KEYS[i + 1], queue_name, job_id, now, ARGV[3], ARGV[4], ARGV[5])
  end
end
return moved
"""
)

RELEASE = (
    TRY_PROMOTE
    + """
-- A resource cleared: every job parked on it is due now.
-- KEYS: the resource's parked index
-- ARGV: now (unix), job prefix, cooldown prefix, parked prefix, scheduled prefix, queue prefix
local now = tonumber(ARGV[1])
local moved = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local bar = string.find(member, '|', 1, true)
  local job_id, queue_name = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
  local scheduled_key = ARGV[5] .. queue_name
  if redis.call('ZSCORE', scheduled_key, job_id) then
    moved = moved + try_promote(scheduled_key, ARGV[6] .. queue_name, queue_name, job_id, now,
                                ARGV[2], ARGV[3], ARGV[4])
  end
end
redis.call('DEL', KEYS[1])
return moved
"""
)

RELEASE_SLOTS = (
    TRY_PROMOTE
    + """
-- Slots came free (a job ended, a lease lapsed, a limit rose): as many jobs waiting for a slot go
-- back to their queues, normal priority first, earliest due first. Low-priority waiters get a
-- slot only while another stays free (the reserve the lease script keeps, see feedback/limits.py).
-- KEYS: the slot-waits hash (scope -> default limit; entries stay, so a job refused a slot just
--       now, not yet parked, is never left out: one per limited scope)
-- ARGV: now (unix), job prefix, cooldown prefix, parked prefix, scheduled prefix, queue prefix,
--       leases prefix, limit prefix, then the scopes to look at (none: every waiting scope)
local now = tonumber(ARGV[1])
local scopes = {}
for i = 9, #ARGV do scopes[#scopes + 1] = ARGV[i] end
if #scopes == 0 then scopes = redis.call('HKEYS', KEYS[1]) end

local function hand_out(park, n, scheduled_prefix, queue_prefix)
  if n <= 0 then return 0 end
  local moved = 0
  for _, member in ipairs(redis.call('ZRANGE', park, 0, n - 1)) do
    redis.call('ZREM', park, member)
    local bar = string.find(member, '|', 1, true)
    local job_id, queue_name = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
    local scheduled_key = scheduled_prefix .. queue_name
    if redis.call('ZSCORE', scheduled_key, job_id) then
      moved = moved + try_promote(scheduled_key, queue_prefix .. queue_name, queue_name, job_id, now,
                                  ARGV[2], ARGV[3], ARGV[4])
    end
  end
  return moved
end

local moved = 0
for _, scope in ipairs(scopes) do
  local default = redis.call('HGET', KEYS[1], scope)
  if default then
    local normal, low = ARGV[4] .. 'slot:' .. scope, ARGV[4] .. 'slot-low:' .. scope
    local limit = tonumber(redis.call('GET', ARGV[8] .. scope) or default)
    local free = limit - redis.call('ZCOUNT', ARGV[7] .. scope, now, '+inf')
    local waiting = redis.call('ZCARD', normal)
    moved = moved + hand_out(normal, math.min(free, waiting), ARGV[5], ARGV[6])
    free = free - math.min(free, waiting)
    moved = moved + hand_out(low, free - math.min(1, limit - 1), ARGV[5], ARGV[6])
  end
end
return moved
"""
)

RECOVER = """
-- Jobs whose worker stopped heartbeating (killed mid-job): back to their queue when the task
-- is idempotent or resumable, else to failed with the reason. Finished or failed jobs whose
-- registry entry lingered are only unlisted.
-- KEYS: abandoned counter, then per queue: started registry, queue, failed registry
-- ARGV: now (unix), job prefix, execution prefix, executions-registry prefix, failed expiry
--       (unix), reason, most per queue, then the queue names
local now = tonumber(ARGV[1])
local moved = 0
for i = 2, #KEYS, 3 do
  local queue_name = ARGV[7 + (i + 1) / 3]
  for _, composite in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))) do
    local job_id, exec_id = string.match(composite, '^(.*):([^:]*)$')
    if not job_id then job_id, exec_id = composite, '' end
    redis.call('ZREM', KEYS[i], composite)
    redis.call('DEL', ARGV[3] .. composite)
    redis.call('ZREM', ARGV[4] .. job_id, exec_id)
    local job_key = ARGV[2] .. job_id
    if redis.call('HGET', job_key, 'status') == 'started' then
      local again, task = false, 'unknown'
      local meta = redis.call('HGET', job_key, 'meta')
      local ok, decoded = pcall(cjson.decode, meta or '')
      if ok and type(decoded) == 'table' and type(decoded['easeoff']) == 'table' then
        local info = decoded['easeoff']
        again = info['idempotent'] == true or info['resumable'] == true
        if type(info['task']) == 'string' then task = info['task'] end
      end
      if again then
        redis.call('HSET', job_key, 'status', 'queued')
        redis.call('HDEL', job_key, 'worker_name', 'started_at')
        redis.call('LPUSH', KEYS[i + 1], job_id)  -- it was next once already: first in line again
        redis.call('HINCRBY', KEYS[1], queue_name .. '|' .. task .. '|requeued', 1)
      else
        redis.call('HSET', job_key, 'status', 'failed', 'exc_info', ARGV[6])
        redis.call('HDEL', job_key, 'worker_name')
        redis.call('ZADD', KEYS[i + 2], ARGV[5], job_id)
        redis.call('HINCRBY', KEYS[1], queue_name .. '|' .. task .. '|failed', 1)
      end
      moved = moved + 1
    end
  end
end
return moved
"""

ABANDONED_REASON = (
    "easeoff: abandoned: its worker stopped heartbeating mid-job (killed?); not requeued because the task "
    "is neither idempotent nor resumable"
)

FAIL_CLAIMED = """
-- KEYS: started registry, failed registry, job, execution
-- ARGV: execution composite key, job id, expires at (unix), exc text
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 'status', 'failed', 'exc_info', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Claim:
    job_id: str
    queue_name: str
    execution: Execution


class JobMoves:
    """The atomic job moves easeoff adds to rq, bound to one Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._claim = connection.register_script(CLAIM)
        self._defer = connection.register_script(DEFER)
        self._promote = connection.register_script(PROMOTE)
        self._release = connection.register_script(RELEASE)
        self._release_slots = connection.register_script(RELEASE_SLOTS)
        self._fail = connection.register_script(FAIL_CLAIMED)
        self._recover = connection.register_script(RECOVER)

    def claim(self, queues: Sequence[Queue], worker_name: str, ttl: int) -> Claim | None:
        """Pop the first job of the first non-empty queue straight into its started registry."""
        if not queues:
            return None
        keys: list[str] = []
        for queue in queues:
            keys += [queue.key, StartedJobRegistry(queue.name, connection=self.connection).key]
        execution_id = uuid.uuid4().hex
        now = time.time()
        result = self._claim(
            keys=keys,
            args=[
                worker_name,
                execution_id,
                repr(now),
                ttl,
                utcformat(_utc(now)),
                Job.redis_job_namespace_prefix,
                f"{RQ_KEY_PREFIX}:execution:",
                ExecutionRegistry.key_template.format(""),
                WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name),
            ],
        )
        if not result:
            return None
        index, job_id = int(result[0]), _text(result[1])
        queue = queues[(index - 1) // 2]
        execution = Execution(id=execution_id, job_id=job_id, connection=self.connection, worker_name=worker_name)
        return Claim(job_id=job_id, queue_name=queue.name, execution=execution)

    def defer(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        due: float,
        task: str,
        reasons: Iterable[str],
        park_on: Iterable[str] = (),
    ) -> bool:
        """Started → scheduled with the job's new meta, and count the deferral by reason.

        `park_on` names the strained resources the job waits for: it is indexed under each,
        so it stays parked while they cool down and is released the moment they clear.
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        scheduled = ScheduledJobRegistry(queue.name, connection=self.connection)
        kinds = sorted({reason_kind(r) for r in reasons})
        counter_fields = [counter_field(queue.name, task, kind) for kind in kinds]
        parked = [parked_key(r) for r in park_on]
        return bool(
            self._defer(
                keys=[
                    started.key,
                    scheduled.key,
                    job.key,
                    execution.key,
                    ExecutionRegistry(job_id=job.id, connection=self.connection).key,
                    execution.worker_executions_key,
                    counter_key("deferred"),
                    *parked,
                ],
                args=[
                    execution.composite_key,
                    execution.id,
                    job.id,
                    repr(due),
                    job.serializer.dumps(job.meta),
                    f"{job.id}|{queue.name}",
                    *counter_fields,
                ],
            )
        )

    def promote(self, queues: Sequence[Queue], now: float | None = None, most: int = 1000) -> int:
        """Scheduled jobs that are due → the end of their queue. Returns how many moved."""
        if not queues:
            return 0
        keys: list[str] = []
        for queue in queues:
            keys += [ScheduledJobRegistry(queue.name, connection=self.connection).key, queue.key]
        now = time.time() if now is None else now
        args = [repr(now), most, Job.redis_job_namespace_prefix, COOLDOWN_PREFIX, PARKED_PREFIX]
        return int(self._promote(keys=keys, args=[*args, *(q.name for q in queues)]))

    def release(self, resource: str, now: float | None = None) -> int:
        """A resource cleared: move the jobs parked on it back to their queues now."""
        return int(self._release(keys=[parked_key(resource)], args=_release_args(now)))

    def release_slots(
        self, scopes: Sequence[str] = (), pipeline: Redis | None = None, now: float | None = None
    ) -> int | None:
        """Hand free slots of `scopes` (default: every scope that has refused a slot) to waiting jobs.

        With `pipeline`, it runs inside that transaction (the one that gives a lease back), sent
        with EVAL: redis-py checks a registered script with SCRIPT EXISTS before every pipeline
        that carries one, a round trip on each job's ending."""
        args = [*_release_args(now), LEASES_KEY.format(scope=""), LIMIT_KEY.format(scope=""), *scopes]
        if pipeline is not None:
            pipeline.eval(RELEASE_SLOTS, 1, SLOT_WAITS_KEY, *args)
            return None
        return int(self._release_slots(keys=[SLOT_WAITS_KEY], args=args))

    def fail_deferred_too_long(
        self, job: Job, queue: Queue, execution: Execution, reason: str, worker_name: str, task: str, kind: str
    ) -> bool:
        """Started → failed for a job past its deferral cap, in one WATCHed transaction.

        Uses rq's own failure bookkeeping (failed registry and result stream), so `rq info`
        and `job.latest_result()` show the reason; counted as `expired` by reason.
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(started.key)
                    if pipe.zscore(started.key, execution.composite_key) is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    execution.delete(job=job, pipeline=pipe)
                    job.set_status(JobStatus.FAILED, pipeline=pipe)
                    pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
                    job._handle_failure(reason, pipeline=pipe, worker_name=worker_name, execution_id=execution.id)
                    pipe.hincrby(counter_key("expired"), counter_field(queue.name, task, kind), 1)
                    pipe.execute()
                    return True
                except WatchError:
                    continue  # another job entered or left `started`: check ownership again

    def recover_abandoned(
        self, queues: Sequence[Queue], now: float | None = None, most: int = 1000, failed_ttl: int = 31536000
    ) -> int:
        """Started jobs whose heartbeat lapsed → their queue (idempotent or resumable tasks) or failed."""
        if not queues:
            return 0
        keys = [counter_key("abandoned")]
        for queue in queues:
            keys += [
                StartedJobRegistry(queue.name, connection=self.connection).key,
                queue.key,
                FailedJobRegistry(queue.name, connection=self.connection).key,
            ]
        now = time.time() if now is None else now
        args = [
            repr(now),
            Job.redis_job_namespace_prefix,
            f"{RQ_KEY_PREFIX}:execution:",
            ExecutionRegistry.key_template.format(""),
            repr(now + failed_ttl),
            ABANDONED_REASON,
            most,
        ]
        return int(self._recover(keys=keys, args=[*args, *(q.name for q in queues)]))

    def requeue_failed(self, job_id: str, queue_name: str) -> bool:
        """Failed → its queue, in one WATCHed transaction; False if it is not in that failed registry.

        rq's own `FailedJobRegistry.requeue` removes the job and enqueues it in two steps, so a
        kill between them loses it. The easeoff meta is kept (resources, task, cursor); its
        deferral clocks restart, or the caps that failed it would fail it again at once.
        """
        failed = FailedJobRegistry(queue_name, connection=self.connection)
        queue = Queue(queue_name, connection=self.connection)
        job_key = Job.key_for(job_id)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(failed.key, job_key)
                    if pipe.zscore(failed.key, job_id) is None:
                        pipe.unwatch()
                        return False
                    meta = pipe.hget(job_key, "meta")
                    pipe.multi()
                    pipe.zrem(failed.key, job_id)
                    if meta is not None:
                        pipe.hset(job_key, "meta", _restart_deferral_clocks(meta))
                    pipe.hset(
                        job_key, mapping={"status": JobStatus.QUEUED.value, "enqueued_at": utcformat(_utc(time.time()))}
                    )
                    pipe.hdel(job_key, "started_at", "ended_at", "exc_info", "last_heartbeat", "worker_name")
                    pipe.rpush(queue.key, job_id)
                    pipe.sadd(Queue.redis_queues_keys, queue.key)
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def fail_claimed(self, job_id: str, queue: Queue, execution: Execution, reason: str, ttl: int = 31536000) -> bool:
        """A claimed job that cannot run (its payload is unreadable) goes to failed with the reason."""
        started = StartedJobRegistry(queue.name, connection=self.connection)
        failed = FailedJobRegistry(queue.name, connection=self.connection)
        return bool(
            self._fail(
                keys=[started.key, failed.key, Job.key_for(job_id), execution.key],
                args=[execution.composite_key, job_id, repr(time.time() + ttl), reason],
            )
        )


def _release_args(now: float | None) -> list[str]:
    """What RELEASE and RELEASE_SLOTS need to move parked jobs back (see TRY_PROMOTE)."""
    return [
        repr(time.time() if now is None else now),
        Job.redis_job_namespace_prefix,
        COOLDOWN_PREFIX,
        PARKED_PREFIX,
        ScheduledJobRegistry.key_template.format(""),
        Queue.redis_queue_namespace_prefix,
    ]


def _restart_deferral_clocks(raw_meta: bytes) -> bytes:
    """The job's meta with its easeoff deferral count and clocks reset; anything else kept as it was."""
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        return raw_meta  # not easeoff's JSON: leave it for the worker to judge
    info = meta.get(META_KEY) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        return raw_meta
    for clock in ("first_deferred_at", "expires_at", "unknown_since", "deferred_at"):
        info.pop(clock, None)
    info["deferrals"] = 0
    return json.dumps(meta).encode()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
