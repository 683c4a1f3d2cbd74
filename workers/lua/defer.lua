-- Started -> scheduled with the job's new meta, indexed under each scope it is parked on, and
-- the deferral counted by reason. Refused (0) when the execution is no longer this worker's:
-- its started entry is gone, or the job's owner key names another execution (fenced).
-- KEYS: started registry, scheduled registry, job, execution, executions registry,
--       worker executions, deferral counter, the next-due hint, the job's owner key,
--       then the parked index of each scope
-- ARGV: the named arguments, then the counter fields to increment
local composite, exec_id, job_id, due, meta, parked_member, owner, lapses_field, restart_ttl = unpack(ARGV, 1, 9)
local FIRST_FIELD, FIRST_PARKED = 10, 10
if not redis.call('ZSCORE', KEYS[1], composite) then
  return 0  -- no longer ours: cleanup already moved the job on
end
if owner ~= '' and redis.call('GET', KEYS[9]) ~= owner then
  return 0  -- fenced: another execution owns the job now
end
redis.call('DEL', KEYS[9])
redis.call('ZREM', KEYS[1], composite)
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], exec_id)
redis.call('SREM', KEYS[6], composite)
redis.call('HSET', KEYS[3], 'status', 'scheduled', 'meta', meta)
redis.call('HDEL', KEYS[3], 'worker_name', 'started_at')
-- A job enqueued with rq's `ttl` may wait that long to start, counted from its enqueue. The claim
-- made its key persistent and noted when the wait lapses: a deferral is no new enqueue, so the key
-- gets that deadline back (a job deferred past it is gone now, as a queued job lapses in rq). A
-- job that had started (a retry after a failed run, a checkpoint, an outage: `restart_ttl`) waits
-- anew, as rq's own retry does.
local ttl = tonumber(redis.call('HGET', KEYS[3], 'ttl'))
if ttl and ttl > 0 then
  local lapses_at = redis.call('HGET', KEYS[3], lapses_field)
  if restart_ttl == '1' or not lapses_at then
    redis.call('HDEL', KEYS[3], lapses_field)
    redis.call('EXPIRE', KEYS[3], ttl)
  elseif redis.call('PEXPIREAT', KEYS[3], lapses_at) == 1 and redis.call('EXISTS', KEYS[3]) == 0 then
    return 1  -- lapsed: nothing left to schedule or park
  end
end
redis.call('ZADD', KEYS[2], due, job_id)
local next_due = tonumber(redis.call('GET', KEYS[8]))
if not next_due or tonumber(due) < next_due then
  redis.call('SET', KEYS[8], due)  -- promotion looks again by then
end
for i = FIRST_PARKED, #KEYS do
  redis.call('ZADD', KEYS[i], due, parked_member)
end
for i = FIRST_FIELD, #ARGV do
  redis.call('HINCRBY', KEYS[7], ARGV[i], 1)
end
return 1
