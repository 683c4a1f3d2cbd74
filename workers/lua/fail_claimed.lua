-- A claimed job that cannot run (its payload is unreadable): started -> failed with the reason.
-- KEYS: started registry, failed registry, job, execution
local composite, job_id, expires_at, reason = unpack(ARGV)
if not redis.call('ZSCORE', KEYS[1], composite) then
  return 0
end
redis.call('ZREM', KEYS[1], composite)
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 'status', 'failed', 'exc_info', reason)
redis.call('ZADD', KEYS[2], expires_at, job_id)
return 1
