-- Store one reading the moment it is taken; renew its prober's lease if that is still us (when
-- asked: a lease outlasts several readings, so not every store renews it); if the reading
-- changed a verdict, say so to the workers sleeping on it.
-- KEYS: the reading, its probe lock
-- ARGV: the named arguments. Returns 1 while the target is still ours to probe (as far as this
-- store knows: one that does not renew does not look).
local token, reading, ttl, lease_ms, changed, channel, host = unpack(ARGV, 1, 7)
redis.call('SET', KEYS[1], reading, 'EX', ttl)
if changed == '1' then
  redis.call('PUBLISH', channel, host)
end
if lease_ms == '0' then
  return 1
end
if redis.call('GET', KEYS[2]) == token then
  redis.call('PEXPIRE', KEYS[2], lease_ms)
  return 1
end
return 0
