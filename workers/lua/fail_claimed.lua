-- A claimed job that cannot run (its payload is unreadable): started -> failed with the reason.
-- Refused (0) when the execution is no longer the caller's (its entry gone, or fenced).
-- KEYS: started registry, failed registry, job, execution, the job's owner key
local composite, job_id, expires_at, reason, owner = unpack(ARGV)
if not redis.call('ZSCORE', KEYS[1], composite) then
  return 0
end
if owner ~= '' and redis.call('GET', KEYS[5]) ~= owner then
  return 0
end
redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[1], composite)
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 'status', 'failed', 'exc_info', reason)
redis.call('ZADD', KEYS[2], expires_at, job_id)
return 1
