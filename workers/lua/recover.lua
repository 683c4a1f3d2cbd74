-- Jobs whose owner stopped beating (killed mid-job): back to their queue when the task is
-- idempotent or resumable, else to failed with the reason. A job abandoned more than
-- `most_requeues` times goes to failed too (`poison_reason`): its runs keep taking their worker
-- down with them, and requeued it would go on killing workers. Finished or failed jobs whose
-- registry entry lingered are only unlisted. Counted by `queue|task|outcome` as counter_field
-- spells it (a `|` inside a name becomes `/`).
-- Absence is judged on Redis's clock, and not at all within a grace of a silence of Redis
-- itself (fleet_clock.lua): entries that lapsed while nobody could beat prove nothing. The
-- owner key of a swept execution goes with it, so the old owner's next beat or end is refused.
-- KEYS: abandoned counter, fleet-seen, sweep-after, then per queue: started registry, queue, failed registry
-- ARGV: the named arguments, then the queue names, one per triple
local cutoff, job_prefix, execution_prefix, executions_prefix, failed_expiry, reason, most = unpack(ARGV, 1, 7)
local poison_reason, most_requeues, abandoned_field, owner_prefix, gap, grace = unpack(ARGV, 8, 13)
local FIRST_QUEUE, FIRST_TRIPLE = 14, 4
most_requeues, gap, grace = tonumber(most_requeues), tonumber(gap), tonumber(grace)
local now = fleet_now()
note_fleet(KEYS[2], KEYS[3], now, gap, grace)
if not absence_judgeable(KEYS[3], now) then
  return 0
end
cutoff = tonumber(cutoff) or now
failed_expiry = now + tonumber(failed_expiry)
local function label(text) return (string.gsub(text, '|', '/')) end
local moved = 0
for i = FIRST_TRIPLE, #KEYS, 3 do
  local queue_name = ARGV[FIRST_QUEUE + (i - FIRST_TRIPLE) / 3]
  for _, composite in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', cutoff, 'LIMIT', 0, tonumber(most))) do
    local job_id, exec_id = string.match(composite, '^(.*):([^:]*)$')
    if not job_id then job_id, exec_id = composite, '' end
    redis.call('ZREM', KEYS[i], composite)
    redis.call('DEL', execution_prefix .. composite)
    redis.call('ZREM', executions_prefix .. job_id, exec_id)
    local owner_key = owner_prefix .. job_id
    local owner = redis.call('GET', owner_key)
    -- An entry left by an older execution of a job another one owns now is only unlisted.
    local swept = not owner or string.match(owner, '^[^:]*:(.*)$') == exec_id
    if owner and swept then
      redis.call('DEL', owner_key)  -- fenced: the old owner's beats and its end are refused from now on
    end
    local job_key = job_prefix .. job_id
    if swept and redis.call('HGET', job_key, 'status') == 'started' then
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
