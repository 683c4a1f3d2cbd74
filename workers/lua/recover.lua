-- Jobs whose worker stopped heartbeating (killed mid-job): back to their queue when the task
-- is idempotent or resumable, else to failed with the reason. A job abandoned more than
-- `most_requeues` times goes to failed too (`poison_reason`): its runs keep taking their worker
-- down with them, and requeued it would go on killing workers. Finished or failed jobs whose
-- registry entry lingered are only unlisted. Counted by `queue|task|outcome` as counter_field
-- spells it (a `|` inside a name becomes `/`).
-- KEYS: abandoned counter, then per queue: started registry, queue, failed registry
-- ARGV: the named arguments, then the queue names, one per triple
local now, job_prefix, execution_prefix, executions_prefix, failed_expiry, reason, most = unpack(ARGV, 1, 7)
local poison_reason, most_requeues, abandoned_field = unpack(ARGV, 8, 10)  -- abandoned_field: in the job's hash
local FIRST_QUEUE = 11
now = tonumber(now)
most_requeues = tonumber(most_requeues)
local function label(text) return (string.gsub(text, '|', '/')) end
local moved = 0
for i = 2, #KEYS, 3 do
  local queue_name = ARGV[FIRST_QUEUE + (i - 2) / 3]
  for _, composite in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(most))) do
    local job_id, exec_id = string.match(composite, '^(.*):([^:]*)$')
    if not job_id then job_id, exec_id = composite, '' end
    redis.call('ZREM', KEYS[i], composite)
    redis.call('DEL', execution_prefix .. composite)
    redis.call('ZREM', executions_prefix .. job_id, exec_id)
    local job_key = job_prefix .. job_id
    if redis.call('HGET', job_key, 'status') == 'started' then
      local again, task = false, 'unknown'
      local meta = redis.call('HGET', job_key, 'meta')
      local ok, decoded = pcall(cjson.decode, meta or '')
      if ok and type(decoded) == 'table' and type(decoded['easeoff']) == 'table' then
        local info = decoded['easeoff']
        again = info['idempotent'] == true or info['resumable'] == true
        if type(info['task']) == 'string' then task = info['task'] end
      end
      local field = label(queue_name) .. '|' .. label(task)
      local why = reason
      if again and redis.call('HINCRBY', job_key, abandoned_field, 1) > most_requeues then
        again, why = false, poison_reason
      end
      if again then
        redis.call('HSET', job_key, 'status', 'queued')
        redis.call('HDEL', job_key, 'worker_name', 'started_at')
        redis.call('LPUSH', KEYS[i + 1], job_id)  -- it was next once already: first in line again
        redis.call('HINCRBY', KEYS[1], field .. '|requeued', 1)
      else
        redis.call('HSET', job_key, 'status', 'failed', 'exc_info', why)
        redis.call('HDEL', job_key, 'worker_name')
        redis.call('ZADD', KEYS[i + 2], failed_expiry, job_id)
        redis.call('HINCRBY', KEYS[1], field .. '|failed', 1)
      end
      moved = moved + 1
    end
  end
end
return moved
