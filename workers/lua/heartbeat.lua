-- A running job's beat, fenced: only while the job's owner key still names this execution does
-- it push the started entry's expiry, the execution's and every concurrency lease's on Redis's
-- clock. A lease lost meanwhile (lapsed in a blip and purged) is added back: the token still owns
-- the execution, so the slot is still its. Returns 0 once the job is someone else's (swept,
-- re-claimed): the caller stops the job and records no end.
-- KEYS: owner key, started registry, execution, executions registry, job, fleet-seen, sweep-after,
--       then each lease set the job holds a slot in
local owner, composite, exec_id, ttl, now_text, lease_member, gap, grace = unpack(ARGV)
ttl, gap, grace = tonumber(ttl), tonumber(gap), tonumber(grace)
local FIRST_LEASE = 8
if redis.call('GET', KEYS[1]) ~= owner then
  return 0
end
local now = fleet_now()
note_fleet(KEYS[6], KEYS[7], now, gap, grace)
redis.call('ZADD', KEYS[2], now + ttl, composite)
redis.call('HSET', KEYS[3], 'last_heartbeat', tostring(now))
redis.call('EXPIRE', KEYS[3], ttl + 60)
redis.call('ZADD', KEYS[4], now + ttl + 60, exec_id)
redis.call('EXPIRE', KEYS[4], ttl + 60)
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('HSET', KEYS[5], 'last_heartbeat', now_text)
end
for i = FIRST_LEASE, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, lease_member)
end
return 1
