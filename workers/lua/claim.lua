-- Pop the next job and record its execution in rq's started registry in the same step, so a
-- worker killed in between cannot lose it. Queues are tried in the order given (priority, or
-- rq's dequeue strategy). The execution hash has rq's `Execution` fields (pinned by a test).
-- KEYS: queue key, started-registry key, in pairs, in the order to try them
-- returns: {pair index, job id}, or false when every queue is empty
local worker_name, exec_id, now, ttl, now_text, job_prefix, execution_prefix, executions_prefix,
      worker_executions_key = unpack(ARGV)
now, ttl = tonumber(now), tonumber(ttl)
for i = 1, #KEYS, 2 do
  local job_id = redis.call('LPOP', KEYS[i])
  while job_id do
    local job_key = job_prefix .. job_id
    if redis.call('EXISTS', job_key) == 1 then
      local composite = job_id .. ':' .. exec_id
      local exec_key = execution_prefix .. composite
      redis.call('HSET', exec_key, 'id', exec_id, 'job_id', job_id, 'created_at', now,
                 'last_heartbeat', now, 'worker_name', worker_name)
      redis.call('EXPIRE', exec_key, ttl)
      local runs = executions_prefix .. job_id
      redis.call('ZADD', runs, now + ttl + 60, exec_id)
      redis.call('EXPIRE', runs, ttl + 60)
      redis.call('ZADD', KEYS[i + 1], now + ttl, composite)
      redis.call('SADD', worker_executions_key, composite)
      redis.call('EXPIRE', worker_executions_key, ttl + 60)
      redis.call('HSET', job_key, 'status', 'started', 'worker_name', worker_name,
                 'started_at', now_text, 'last_heartbeat', now_text)
      redis.call('PERSIST', job_key)
      return {i, job_id}
    end
    job_id = redis.call('LPOP', KEYS[i])  -- its data expired: skip it
  end
end
return false
