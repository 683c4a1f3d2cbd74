-- Slots came free (a job ended, a lease lapsed, a limit rose): as many jobs waiting for a slot go
-- back to their queues, normal priority first, earliest due first. Low-priority waiters get a
-- slot only while another stays free (the reserve feedback/lua/acquire.lua keeps).
-- KEYS: the slot-waits hash (scope -> default limit; entries stay, so a job refused a slot just
--       now, not yet parked, is never left out: one per limited scope)
-- ARGV: the named arguments, then the scopes to look at (none: every waiting scope)
local now, job_prefix, cooldown_prefix, parked_prefix, task_prefix, scheduled_prefix, queue_prefix,
      leases_prefix, limit_prefix, slot_prefix, slot_low_prefix = unpack(ARGV, 1, 11)
local FIRST_SCOPE = 12
now = tonumber(now)
local p = {job_prefix = job_prefix, cooldown_prefix = cooldown_prefix, parked_prefix = parked_prefix,
           task_prefix = task_prefix}
local scopes = {}
for i = FIRST_SCOPE, #ARGV do scopes[#scopes + 1] = ARGV[i] end
if #scopes == 0 then scopes = redis.call('HKEYS', KEYS[1]) end

local function hand_out(park, n)
  if n <= 0 then return 0 end
  local moved = 0
  for _, member in ipairs(redis.call('ZRANGE', park, 0, n - 1)) do
    redis.call('ZREM', park, member)
    moved = moved + promote_member(member, now, p, scheduled_prefix, queue_prefix)
  end
  return moved
end

local moved = 0
for _, scope in ipairs(scopes) do
  local default = redis.call('HGET', KEYS[1], scope)
  if default then
    local normal, low = parked_prefix .. slot_prefix .. scope, parked_prefix .. slot_low_prefix .. scope
    local limit = tonumber(redis.call('GET', limit_prefix .. scope) or default)
    local free = limit - redis.call('ZCOUNT', leases_prefix .. scope, now, '+inf')
    local waiting = redis.call('ZCARD', normal)
    moved = moved + hand_out(normal, math.min(free, waiting))
    free = free - math.min(free, waiting)
    moved = moved + hand_out(low, free - math.max(0, math.min(1, limit - 1)))  -- limit 0: none
  end
end
return moved
