-- Cancel one waiting job (`easeoff cancel`), in one step: out of its queue's list, the scheduled
-- registry (a deferred, parked or enqueue_in job) or rq's deferred registry (waiting on a job it
-- depends on), out of every parked index and rate reservation it holds, into rq's canceled
-- registry with rq's status. A job a worker claimed meanwhile (its owner key names an execution
-- in the started registry) is running: nothing is touched, and the caller asks it to stop.
-- The parked indexes and reservations are found from the job's easeoff meta (its resources and
-- its task), as parking.lua finds them; nothing else is touched.
-- KEYS: job, queue, scheduled, deferred (dependencies), ready, started, canceled registries, owner key
-- returns {outcome, detail}: {'canceled', where it was (queued, scheduled, deferred, parked, waiting_on_dependency)}, {'running', owner}, {'not_waiting', status},
--         {'missing', ''}
local job_id, queue_name, now, task_prefix, parked_prefix, slot_prefix, slot_low_prefix, class_prefix,
      reserved_prefix = unpack(ARGV, 1, 9)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing', ''}
end
local owner = redis.call('GET', KEYS[8])
if owner then
  local exec = string.match(owner, '^[^:]*:(.*)$')
  if exec and redis.call('ZSCORE', KEYS[6], job_id .. ':' .. exec) then
    return {'running', owner}
  end
end
local where
if redis.call('LREM', KEYS[2], 0, job_id) > 0 then
  where = 'queued'
elseif redis.call('ZREM', KEYS[3], job_id) > 0 then
  where = 'scheduled'
elseif redis.call('ZREM', KEYS[4], job_id) > 0 then
  where = 'waiting_on_dependency'
elseif redis.call('ZREM', KEYS[5], job_id) > 0 then
  where = 'queued'
else
  return {'not_waiting', redis.call('HGET', KEYS[1], 'status') or ''}
end

local scopes, task, deferred = {}, nil, false
local ok, decoded = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'meta') or '')
if ok and type(decoded) == 'table' and type(decoded['easeoff']) == 'table' then
  local info = decoded['easeoff']
  deferred = info['deferred_at'] ~= nil and info['deferred_at'] ~= cjson.null
  if type(info['resources']) == 'table' then
    for _, r in ipairs(info['resources']) do scopes[#scopes + 1] = tostring(r) end
  end
  if type(info['task']) == 'string' and info['task'] ~= '' then
    task = info['task']
    scopes[#scopes + 1] = task_prefix .. task
  end
end
local member = job_id .. '|' .. queue_name
local unparked = 0
for _, s in ipairs(scopes) do
  unparked = unparked + redis.call('ZREM', parked_prefix .. s, member)
  unparked = unparked + redis.call('ZREM', parked_prefix .. slot_prefix .. s, member)
  unparked = unparked + redis.call('ZREM', parked_prefix .. slot_low_prefix .. s, member)
  if task then
    unparked = unparked + redis.call('ZREM', parked_prefix .. class_prefix .. s .. '|' .. task, member)
  end
  redis.call('ZREM', reserved_prefix .. s, job_id)
end
if where == 'scheduled' and unparked > 0 then
  where = 'parked'
elseif where == 'scheduled' and deferred then
  where = 'deferred'
end
redis.call('HSET', KEYS[1], 'status', 'canceled')
redis.call('ZADD', KEYS[7], now, job_id)
return {'canceled', where}
