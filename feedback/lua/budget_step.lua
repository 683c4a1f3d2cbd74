-- A budget controller's step, written once per probe interval fleet-wide, however many probers
-- computed one: a compare-and-set on the state's version, and at most one step per interval
-- (intervals counted on Redis's clock from the epoch, as adapt_limit.lua does). The winner's
-- level becomes the resource's limit (the leases enforce it, acquire.lua) and, below one job
-- at a time, its duty cycle (release_pace.lua paces the next start by it).
-- The step's record for operators (`record`, in field `last`: what it saw and decided, JSON LastStep,
-- feedback/budget/state.py) is written with it.
-- A step that asks to relearn (`relearn` '1') flags the budget hash: the measuring side's next
-- step forgets its baseline (budget_observe.lua).
-- KEYS: the budget hash (fields controller, version, step, last), the limit key, the duty key
-- ARGV: the named arguments
-- returns: 1 when this step was written, 0 when another prober's was first
local interval_ms, version, state, limit, duty, record, relearn = unpack(ARGV, 1, 7)
interval_ms = tonumber(interval_ms)
local time = redis.call('TIME')
local interval = math.floor((tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)) / interval_ms)
local last = tonumber(redis.call('HGET', KEYS[1], 'step') or '')
if last ~= nil and last >= interval then
  return 0  -- stepped already this interval
end
if (redis.call('HGET', KEYS[1], 'version') or '0') ~= version then
  return 0  -- another prober's step landed since this one read the state
end
redis.call('HSET', KEYS[1], 'controller', state, 'version', tostring(tonumber(version) + 1), 'step', interval,
  'last', record)
if relearn == '1' then
  redis.call('HSET', KEYS[1], 'relearn', '1')
end
redis.call('SET', KEYS[2], limit)
if duty == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], duty)
end
return 1
