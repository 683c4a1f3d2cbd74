-- A slot under every limit a job falls under, or the first limit that is full: all or nothing.
-- A refusal records the scope in the slot-waits hash in the same step, so the slot its job
-- will wait for is handed out when one frees (workers/lua/release_slots.lua).
-- Leases expire on Redis's clock, `ttl` after their owner's last beat (the job's heartbeat
-- renews them, workers/lua/heartbeat.lua). A lapsed lease is purged only when absence may be
-- judged (fleet_clock.lua): after a silence of Redis itself, a live job's lease may look lapsed
-- until its owner beats again, and taking its slot would run one job too many.
-- KEYS: the slot-waits hash, fleet-seen, sweep-after, then lease set and limit key in pairs
-- ARGV: the named arguments, then each pair's scope and default limit
-- returns: {0, 0, 0} when every slot was taken, else {index of the full pair, in use, limit}
local ttl, member, reserve, gap, grace = unpack(ARGV, 1, 5)
local FIRST_SCOPE, FIRST_PAIR = 6, 4
ttl, reserve, gap, grace = tonumber(ttl), tonumber(reserve), tonumber(gap), tonumber(grace)
local now = fleet_now()
note_fleet(KEYS[2], KEYS[3], now, gap, grace)
local purge = absence_judgeable(KEYS[3], now)
for i = FIRST_PAIR, #KEYS, 2 do
  if purge then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  end
  local pair = (i - FIRST_PAIR) / 2
  local scope, default = ARGV[FIRST_SCOPE + 2 * pair], ARGV[FIRST_SCOPE + 2 * pair + 1]
  local limit = tonumber(redis.call('GET', KEYS[i + 1]) or default)
  local in_use = redis.call('ZCARD', KEYS[i])
  local keep_free = math.min(reserve, limit - 1)
  if in_use + keep_free >= limit then
    redis.call('HSET', KEYS[1], scope, default)  -- the refused job will wait on this scope
    return {pair + 1, in_use, limit}
  end
end
for i = FIRST_PAIR, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], now + ttl, member)
end
return {0, 0, 0}
