-- A prober stopping: give back the leases it holds, so others take its targets at once.
-- KEYS: probe-lock keys; ARGV: the named arguments
local token = unpack(ARGV, 1, 1)
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == token then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
