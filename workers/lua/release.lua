-- A scope cleared (a resource healthy again, a task resumed): every job parked on it is due now.
-- KEYS: the scope's parked index
local now, job_prefix, cooldown_prefix, parked_prefix, task_prefix, scheduled_prefix, queue_prefix = unpack(ARGV)
now = tonumber(now)
local p = {job_prefix = job_prefix, cooldown_prefix = cooldown_prefix, parked_prefix = parked_prefix,
           task_prefix = task_prefix}
local moved = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local job_id, queue_name = split_member(member)
  local scheduled_key = scheduled_prefix .. queue_name
  if redis.call('ZSCORE', scheduled_key, job_id) then
    moved = moved + try_promote(scheduled_key, queue_prefix .. queue_name, queue_name, job_id, now, p)
  end
end
redis.call('DEL', KEYS[1])
return moved
