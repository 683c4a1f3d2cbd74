-- A slot under every limit a job falls under, or the first limit that is full: all or nothing.
-- A refusal records the scope in the slot-waits hash in the same step, so the slot its job
-- will wait for is handed out when one frees (workers/lua/release_slots.lua).
-- KEYS: the slot-waits hash, then lease set and limit key in pairs
-- ARGV: the named arguments, then each pair's scope and default limit
-- returns: {0, 0, 0} when every slot was taken, else {index of the full pair, in use, limit}
local now, expiry, member, reserve = unpack(ARGV, 1, 4)
local FIRST_SCOPE = 5
now, reserve = tonumber(now), tonumber(reserve)
for i = 2, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local scope, default = ARGV[FIRST_SCOPE + i - 2], ARGV[FIRST_SCOPE + i - 1]
  local limit = tonumber(redis.call('GET', KEYS[i + 1]) or default)
  local in_use = redis.call('ZCARD', KEYS[i])
  local keep_free = math.min(reserve, limit - 1)
  if in_use + keep_free >= limit then
    redis.call('HSET', KEYS[1], scope, default)  -- the refused job will wait on this scope
    return {i / 2, in_use, limit}
  end
end
for i = 2, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], expiry, member)
end
return {0, 0, 0}
