-- Store one reading the moment it is taken, if its prober still holds the target's lease: a
-- prober that lost it (stalled past the lease, its target taken over) must not overwrite the
-- new prober's newer reading, so the lease is checked first and nothing is written without it.
-- Renew the lease when asked (a lease outlasts several readings, so not every store renews it);
-- if the reading changed a verdict, say so to the workers sleeping on it.
-- A forced store (`easeoff probe`: no lease, probed on demand) is written only while no
-- prober holds the lease; it never takes one.
-- And say whether a job wants the target now (feedback/signals/demand.py): any of its demand
-- keys present; a target without any is always wanted.
-- KEYS: the reading, its probe lock, then the target's demand keys
-- ARGV: the named arguments. Returns {stored, wanted}: stored 1 if the reading was stored (for
-- a prober: the target is still ours to probe), 0 if it was refused (stop probing the target).
local token, reading, ttl, lease_ms, changed, channel, host, forced = unpack(ARGV, 1, 8)
local wanted = 1
if #KEYS > 2 then
  wanted = 0
  for i = 3, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      wanted = 1
      break
    end
  end
end
local holder = redis.call('GET', KEYS[2])
if holder ~= token and not (forced == '1' and not holder) then
  return {0, wanted}
end
redis.call('SET', KEYS[1], reading, 'EX', ttl)
if changed == '1' then
  redis.call('PUBLISH', channel, host)
end
if holder == token and lease_ms ~= '0' then
  redis.call('PEXPIRE', KEYS[2], lease_ms)
end
return {1, wanted}
