-- Shared by promote, release and release_slots: move one due job from scheduled to its queue,
-- unless a scope it waits on is cooling, in which case it is re-parked until the cool-down ends.
-- The job's easeoff meta is read by field name: `resources`, `task`, `expires_at` (tasks/meta.py).

-- The scopes a job waits on (its resources and its task), and when its deferral cap ends parking (0: never).
local function parking_info(job_key, task_prefix)
  local meta = redis.call('HGET', job_key, 'meta')
  if not meta then return {}, 0 end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' or type(decoded['easeoff']) ~= 'table' then return {}, 0 end
  local info = decoded['easeoff']
  local list = {}
  if type(info['resources']) == 'table' then
    for _, r in ipairs(info['resources']) do list[#list + 1] = r end
  end
  if type(info['task']) == 'string' then list[#list + 1] = task_prefix .. info['task'] end  -- a paused task
  local expires = tonumber(info['expires_at']) or 0
  return list, expires
end

-- Where rq's scheduler would put the job back: at the front for `enqueue_at(..., at_front=True)`,
-- and for a retry of `Retry(..., enqueue_at_front=True)` once it has run (rq's
-- Job.should_enqueue_at_front, read from the job's hash).
local function at_front(job_key)
  local fields = redis.call('HMGET', job_key, 'enqueue_at_front', 'enqueue_at_front_on_retry', 'ended_at')
  if fields[1] == '1' then return true end
  return fields[2] == '1' and fields[3] ~= false and fields[3] ~= ''
end

-- p: job_prefix, cooldown_prefix, parked_prefix, task_prefix
local function try_promote(scheduled_key, queue_key, queue_name, job_id, now, p)
  local job_key = p.job_prefix .. job_id
  local member = job_id .. '|' .. queue_name
  if redis.call('EXISTS', job_key) == 0 then
    redis.call('ZREM', scheduled_key, job_id)
    return 0
  end
  local scopes, expires = parking_info(job_key, p.task_prefix)
  local wait = 0
  if expires == 0 or now < expires then  -- past its cap: back to a worker, to be failed with the reason
    for _, s in ipairs(scopes) do
      local ttl = redis.call('PTTL', p.cooldown_prefix .. s)
      if ttl > wait then wait = ttl end
    end
  end
  if wait > 0 then
    -- Parked until its scope clears (release moves it at once) or its cap ends parking;
    -- re-checking it sooner would only churn.
    local due = now + 86400
    if expires > 0 and expires < due then due = expires end
    redis.call('ZADD', scheduled_key, due, job_id)
    for _, s in ipairs(scopes) do
      if redis.call('PTTL', p.cooldown_prefix .. s) > 0 then
        redis.call('ZADD', p.parked_prefix .. s, due, member)
      end
    end
    return 0
  end
  redis.call('ZREM', scheduled_key, job_id)
  for _, s in ipairs(scopes) do
    redis.call('ZREM', p.parked_prefix .. s, member)
  end
  redis.call('HSET', job_key, 'status', 'queued')
  if at_front(job_key) then
    redis.call('LPUSH', queue_key, job_id)
  else
    redis.call('RPUSH', queue_key, job_id)
  end
  return 1
end

-- A parked-index member is `job_id|queue_name`: promote that job if it is still scheduled.
local function promote_member(member, now, p, scheduled_prefix, queue_prefix)
  local bar = string.find(member, '|', 1, true)
  local job_id, queue_name = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
  local scheduled_key = scheduled_prefix .. queue_name
  if not redis.call('ZSCORE', scheduled_key, job_id) then return 0 end
  return try_promote(scheduled_key, queue_prefix .. queue_name, queue_name, job_id, now, p)
end
