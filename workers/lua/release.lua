-- A scope cleared (a resource healthy again, a task resumed): every job parked on it is due now.
-- KEYS: the scope's parked index
local now, job_prefix, cooldown_prefix, parked_prefix, task_prefix, scheduled_prefix, queue_prefix = unpack(ARGV)
now = tonumber(now)
local p = {job_prefix = job_prefix, cooldown_prefix = cooldown_prefix, parked_prefix = parked_prefix,
           task_prefix = task_prefix}
local moved = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  moved = moved + promote_member(member, now, p, scheduled_prefix, queue_prefix)
end
redis.call('DEL', KEYS[1])
return moved
