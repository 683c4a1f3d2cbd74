-- Due deferred jobs back to their queues (or re-parked while what they wait on cools down),
-- then the next-due hint set to the earliest due time left (deleted when none is).
-- KEYS: the next-due hint, then scheduled-registry key, queue key, in pairs
-- ARGV: the named arguments, then the queue names, one per pair
local now, most, job_prefix, cooldown_prefix, parked_prefix, task_prefix = unpack(ARGV, 1, 6)
local FIRST_QUEUE = 7
local p = {job_prefix = job_prefix, cooldown_prefix = cooldown_prefix, parked_prefix = parked_prefix,
           task_prefix = task_prefix}
local moved = 0
local earliest = nil
for i = 2, #KEYS, 2 do
  local queue_name = ARGV[FIRST_QUEUE + (i - 2) / 2]
  local ids = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(most))
  for _, job_id in ipairs(ids) do
    moved = moved + try_promote(KEYS[i], KEYS[i + 1], queue_name, job_id, tonumber(now), p)
  end
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] and (not earliest or tonumber(first[2]) < earliest) then earliest = tonumber(first[2]) end
end
if earliest then
  redis.call('SET', KEYS[1], string.format('%.6f', earliest))
else
  redis.call('DEL', KEYS[1])
end
return moved
