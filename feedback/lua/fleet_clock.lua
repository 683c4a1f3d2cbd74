-- The fleet's one clock, Redis's, and whether absence may be judged on it now.
-- A job's started entry and a lease carry the Redis time by which their owner must beat again.
-- When Redis itself was silent (stalled, restarted, failed over) nobody could beat, so an entry
-- that lapsed meanwhile proves nothing: every script that touches the fleet notes the time, and
-- after a silence longer than `gap` no sweep and no purge of lapsed leases runs for `grace`,
-- which gives every live owner time to beat again.
local function fleet_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function note_fleet(seen_key, after_key, now, gap, grace)
  local seen = tonumber(redis.call('GET', seen_key))
  redis.call('SET', seen_key, tostring(now))
  if not seen or now - seen > gap then
    local after = tonumber(redis.call('GET', after_key))
    if not after or after < now + grace then
      redis.call('SET', after_key, tostring(now + grace))
    end
  end
end

local function absence_judgeable(after_key, now)
  local after = tonumber(redis.call('GET', after_key))
  return not after or now >= after
end
