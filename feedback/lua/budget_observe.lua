-- The measuring side of a budget, stepped once per resource per probe interval, fleet-wide,
-- however many callers ask: the first caller in an interval (on Redis's clock, intervals counted
-- from the epoch) counts the heavy work finished since the last step and, if the resource has
-- been quiet for a whole latency window, learns the idle baseline from the live latency it
-- brings; the others get what that step found. Same pattern as adapt_limit.lua. Its fields in
-- the budget hash are its own (the controller's are `controller`, `version`, `step`).
--
-- Quiet: no live lease on the resource, no work finished since the last step, and no duty cycle
-- in force — for at least a window and an interval, so the live window learned from holds no
-- heavy work at all. Every heavy job on a budgeted resource holds a lease while it runs; a job
-- claimed and parked for a slot (rq's started registry) does not, and runs nothing. The gaps
-- of a duty cycle are not quiet: the site is still settling from the last job (purge, flushing)
-- and a baseline learned there creeps up with the heavy work it should be measured against.
--
-- The baseline is an EWMA with a half-life (an hour by default) of the live latency at the
-- budget's quantile, normalised by the weight seen so far (so the first idle windows are their
-- time-weighted mean rather than a decay from zero). What was learned ages with the clock,
-- busy or not; a step adds the time since the last one it learned from, but at most
-- `max_step_ms` (one window: the most one reading knows), so one idle window after hours of
-- heavy work moves the baseline by that window's share, not by the hours. It is reported once
-- `warmup_ms` of idle time has been learned from. A controller that could not meet the budget
-- for a while flags `relearn`: the next step forgets the baseline, and learns it afresh.
--
-- KEYS: the budget hash, the resource's leases, its work counter, its duty key
-- ARGV: the named arguments
-- returns: {baseline or '', work done since the last step, leases live now, now (s)}
local interval_ms, window_ms, live, half_life_ms, max_step_ms, warmup_ms, keep_ms = unpack(ARGV, 1, 7)
interval_ms, window_ms = tonumber(interval_ms), tonumber(window_ms)
half_life_ms, max_step_ms, warmup_ms = tonumber(half_life_ms), tonumber(max_step_ms), tonumber(warmup_ms)
live = tonumber(live)
local state_key, leases_key, work_key, duty_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local time = redis.call('TIME')
local seconds, micros = tonumber(time[1]), tonumber(time[2])
local now_ms = seconds * 1000 + math.floor(micros / 1000)
local now = string.format('%d.%06d', seconds, micros)
local interval = math.floor(now_ms / interval_ms)

local running = redis.call('ZCOUNT', leases_key, now, '+inf')
local paced = redis.call('EXISTS', duty_key) == 1

local fields = redis.call('HMGET', state_key, 'observed', 'work_seen', 'work_done', 'quiet_since', 'baseline',
  'weight', 'learned_at', 'learned_ms')
local observed, work_seen, work_done = tonumber(fields[1]), tonumber(fields[2]), tonumber(fields[3]) or 0
local quiet_since, baseline, weight = tonumber(fields[4]), tonumber(fields[5]), tonumber(fields[6]) or 0
local learned_at, learned_ms = tonumber(fields[7]), tonumber(fields[8]) or 0

if observed == nil or observed < interval then
  if redis.call('HGET', state_key, 'relearn') == '1' then  -- the controller asked (budget_step.lua): forget
    baseline, weight, learned_at, learned_ms, quiet_since = nil, 0, nil, 0, nil
    redis.call('HDEL', state_key, 'relearn', 'baseline', 'learned_at')
  end
  local work = tonumber(redis.call('GET', work_key) or '') or 0
  work_done = work_seen and math.max(work - work_seen, 0) or 0
  local busy = running > 0 or paced or work_done > 0
  if busy or quiet_since == nil then
    quiet_since = now_ms  -- quiet from now on, at the earliest
  elseif live ~= nil and live >= 0 and now_ms - quiet_since >= window_ms + interval_ms then
    local age = learned_at and (now_ms - learned_at) or interval_ms
    local dt = math.min(age, max_step_ms)
    local kept = weight * 2 ^ (-age / half_life_ms)  -- what was learned ages with the clock
    local fresh = 1 - 2 ^ (-dt / half_life_ms)  -- one step is worth at most one window
    baseline = ((baseline or 0) * kept + live * fresh) / (kept + fresh)
    weight = kept + fresh
    learned_at = now_ms
    learned_ms = learned_ms + dt
  end
  redis.call('HSET', state_key, 'observed', interval, 'work_seen', work, 'work_done', work_done,
    'quiet_since', quiet_since, 'weight', string.format('%.17g', weight), 'learned_ms', learned_ms)
  if baseline ~= nil then
    redis.call('HSET', state_key, 'baseline', string.format('%.17g', baseline), 'learned_at', learned_at)
  end
  redis.call('PEXPIRE', state_key, keep_ms)
end
local reported = ''
if baseline ~= nil and learned_ms >= warmup_ms then
  reported = string.format('%.17g', baseline)
end
return {reported, tostring(work_done), running, now}
