-- Store one reading the moment it is taken; renew its prober's lease if that is still us.
-- KEYS: the reading, its probe lock
-- ARGV: the named arguments. Returns 1 while the target is still ours to probe.
local token, reading, ttl, lease_ms = unpack(ARGV, 1, 4)
redis.call('SET', KEYS[1], reading, 'EX', ttl)
if redis.call('GET', KEYS[2]) == token then
  redis.call('PEXPIRE', KEYS[2], lease_ms)
  return 1
end
return 0
