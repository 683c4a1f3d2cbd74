-- Pop the next job and record its execution in rq's started registry in the same step, so a
-- worker killed in between cannot lose it, and fence it: the execution gets the fleet's next
-- fencing number, and the job's owner key names that token and execution, so every later move
-- can check inside its own script that the caller still owns the job. Queues are tried in the
-- order given (priority, or rq's dequeue strategy). The execution hash has rq's `Execution`
-- fields (pinned by a test); its expiry is on Redis's clock.
-- A claim sent twice (redis-py retries a script whose reply was lost) answers what it popped
-- the first time, from its receipt, rather than popping a second job and stranding the first.
-- A queued id whose job is running under a live owner (the same id queued twice) or that
-- already finished is dropped, not run again.
-- KEYS: fence counter, fleet-seen, sweep-after, this claim's receipt, then queue key and
--       started-registry key in pairs, in the order to try them
-- returns: {pair index, job id, token, queue key}, or false when every queue is empty
local worker_name, exec_id, ttl, now_text, job_prefix, execution_prefix, executions_prefix,
      worker_executions_key, owner_prefix, gap, grace, lapses_field = unpack(ARGV)
ttl, gap, grace = tonumber(ttl), tonumber(gap), tonumber(grace)
local FIRST_PAIR = 5
local receipt = redis.call('GET', KEYS[4])
if receipt then
  return cjson.decode(receipt)
end
local now = fleet_now()
note_fleet(KEYS[2], KEYS[3], now, gap, grace)

local function runs_elsewhere(job_id, started_key)
  local owner = redis.call('GET', owner_prefix .. job_id)
  if not owner then return false end
  local owner_exec = string.match(owner, '^[^:]*:(.*)$')
  return owner_exec ~= nil and redis.call('ZSCORE', started_key, job_id .. ':' .. owner_exec) ~= false
end

for i = FIRST_PAIR, #KEYS, 2 do
  local job_id = redis.call('LPOP', KEYS[i])
  while job_id do
    local job_key = job_prefix .. job_id
    local status = redis.call('HGET', job_key, 'status')
    if redis.call('EXISTS', job_key) == 1 and status ~= 'finished' and not runs_elsewhere(job_id, KEYS[i + 1]) then
      local token = redis.call('INCR', KEYS[1])
      local composite = job_id .. ':' .. exec_id
      local exec_key = execution_prefix .. composite
      redis.call('HSET', exec_key, 'id', exec_id, 'job_id', job_id, 'created_at', tostring(now),
                 'last_heartbeat', tostring(now), 'worker_name', worker_name)
      redis.call('EXPIRE', exec_key, ttl + 60)
      local runs = executions_prefix .. job_id
      redis.call('ZADD', runs, now + ttl + 60, exec_id)
      redis.call('EXPIRE', runs, ttl + 60)
      redis.call('ZADD', KEYS[i + 1], now + ttl, composite)
      redis.call('SADD', worker_executions_key, composite)
      redis.call('EXPIRE', worker_executions_key, ttl + 60)
      redis.call('HSET', job_key, 'status', 'started', 'worker_name', worker_name,
                 'started_at', now_text, 'last_heartbeat', now_text)
      -- rq's `ttl` is how long a job may wait to start, from its enqueue: the claim keeps the
      -- key while the job is ours, and notes (on Redis's clock) when its wait lapses, for a deferral.
      local left = redis.call('PTTL', job_key)
      if left > 0 and (tonumber(redis.call('HGET', job_key, 'ttl')) or 0) > 0 then
        redis.call('HSET', job_key, lapses_field, string.format('%d', math.floor(now * 1000) + left))
      end
      redis.call('PERSIST', job_key)
      redis.call('SET', owner_prefix .. job_id, token .. ':' .. exec_id)
      local answer = {i - FIRST_PAIR + 1, job_id, token, KEYS[i]}
      redis.call('SET', KEYS[4], cjson.encode(answer), 'EX', 600)
      return answer
    end
    job_id = redis.call('LPOP', KEYS[i])  -- its data expired, it runs under a live owner, or it finished: skip it
  end
end
return false
