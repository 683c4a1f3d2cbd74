-- A job on paced scopes ends (in the transaction that gives its leases back): count its work,
-- and below one job at a time hold the next start back by the pause its duty cycle asks for,
-- on Redis's clock: no new slot before now + run time * (1/duty - 1) (gh-ost's nice-ratio).
-- The duty key is written by the budget's fleet-once step (feedback/lua/budget_step.lua) and
-- absent at one job at a time or more; the start was noted when the lease was taken (acquire.lua).
-- KEYS: per scope: the lease's start, the scope's duty, its pace, its work counter
-- returns: the number of scopes paced
local now = fleet_now()
local paced = 0
for i = 1, #KEYS, 4 do
  local started_key, duty_key, pace_key, work_key = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  redis.call('INCR', work_key)
  local started = tonumber(redis.call('GET', started_key) or '')
  local duty = tonumber(redis.call('GET', duty_key) or '')
  redis.call('DEL', started_key)
  if started and duty and duty > 0 and duty < 1 and now > started then
    local pause = (now - started) * (1 / duty - 1)
    local not_before = now + pause
    local current = tonumber(redis.call('GET', pace_key) or '')
    if not current or current < not_before then
      redis.call('SET', pace_key, string.format('%.6f', not_before), 'PX', math.ceil(pause * 1000) + 1000)
    end
    paced = paced + 1
  end
end
return paced
