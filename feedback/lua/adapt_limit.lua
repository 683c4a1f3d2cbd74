-- One AIMD step per limited scope per probe interval, fleet-wide, however many probers ask.
-- Every worker that probes some host runs the fleet's duties, so several may adapt the same
-- limit in one interval: the first to come in an interval (on Redis's clock, intervals counted
-- from the epoch) takes the step, the others see the limit in force. The step reads the limit,
-- the leases in use and the jobs waiting for a slot here, so no step is taken on a stale read.
-- Same arithmetic as feedback/levers/limits.py `aimd_step` (tests/test_limits.py checks both agree).
-- KEYS: per scope: its limit, its leases, its jobs parked for a slot, its last step
-- ARGV: the named arguments, then per scope: min, max, decrease, strained ('1' or '0')
-- returns: per scope, the limit in force after this call
local interval_ms = unpack(ARGV, 1, 1)
local FIRST_SCOPE = 2
interval_ms = tonumber(interval_ms)
local time = redis.call('TIME')
local seconds, micros = tonumber(time[1]), tonumber(time[2])
local now = string.format('%d.%06d', seconds, micros)
local interval = math.floor((seconds * 1000 + math.floor(micros / 1000)) / interval_ms)

local function aimd(limit, strained, saturated, lo, hi, decrease)
  limit = math.max(lo, math.min(hi, limit))  -- a config change may have moved the bounds
  if strained then
    return math.max(lo, math.floor(limit * decrease))
  end
  if saturated then
    return math.min(hi, limit + 1)
  end
  return limit
end

local limits = {}
for i = 1, #KEYS / 4 do
  local limit_key, leases_key, parked_key, step_key = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local at = FIRST_SCOPE + 4 * (i - 1)
  local lo, hi, decrease, strained = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 3]
  local limit = tonumber(redis.call('GET', limit_key) or '') or lo
  local last = tonumber(redis.call('GET', step_key) or '')
  if last ~= nil and last >= interval then
    limits[i] = limit  -- stepped already this interval
  else
    local in_use = redis.call('ZCOUNT', leases_key, now, '+inf')
    local saturated = in_use >= limit or redis.call('ZCARD', parked_key) > 0
    limit = aimd(limit, strained == '1', saturated, lo, hi, decrease)
    redis.call('SET', limit_key, limit)
    redis.call('SET', step_key, interval, 'PX', 2 * interval_ms)
    limits[i] = limit
  end
end
return limits
