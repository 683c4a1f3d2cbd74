-- A start under every rate the job falls under: at most `count` starts in any window of `per`
-- seconds, per scope. Per scope two zsets: the starts made (member: job id, score: when) and
-- the starts reserved for jobs over the rate (score: from when they may start). A job over
-- the rate is given the earliest time every scope has room for it, behind the reservations
-- already made, and is deferred to it once; when it comes back it starts if the window of
-- real starts has room (promotion's jitter can take it; then it is given the next time).
-- A start is recorded under the claim (`start`: each claim of a job is a start of its own), so
-- a job then refused a slot gives back exactly that start (feedback/levers/rates.py `give_back`).
-- KEYS: for each scope, its starts then its reservations.
-- ARGV: the named arguments, then `count`, `per` for each scope.
-- Returns {1, now} if the job starts now (its start recorded), else {0, when it may start}.
local now, member, start = unpack(ARGV, 1, 3)
now = tonumber(now)
local FIRST_RATE = 4
local scopes = #KEYS / 2

local function rate_of(i)  -- the i-th scope's count and per
  local at = FIRST_RATE + 2 * (i - 1)
  return tonumber(ARGV[at]), tonumber(ARGV[at + 1])
end

local function nth_latest(key, n)
  local found = redis.call('ZREVRANGE', key, n - 1, n - 1, 'WITHSCORES')
  return tonumber(found[2])
end

local own, free_now, at = nil, true, now
for i = 1, scopes do
  local starts, reserved = KEYS[2 * i - 1], KEYS[2 * i]
  local count, per = rate_of(i)
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', '(' .. (now - per))
  redis.call('ZREMRANGEBYSCORE', reserved, '-inf', '(' .. (now - per))  -- jobs that never came back
  local mine = redis.call('ZSCORE', reserved, member)
  if mine then
    own = math.max(own or 0, tonumber(mine))
  end
end

if own and own > now then
  return {0, string.format('%.6f', own)}  -- back too early: its time is still to come
end

for i = 1, scopes do
  local starts, reserved = KEYS[2 * i - 1], KEYS[2 * i]
  local count, per = rate_of(i)
  redis.call('ZREM', reserved, member)
  local made = redis.call('ZCARD', starts)
  if made >= count then  -- no room in the window of real starts
    free_now = false
    at = math.max(at, nth_latest(starts, count) + per)
  end
  if not own then  -- a newcomer queues behind the reservations already made
    local waiting = redis.call('ZCARD', reserved)
    if waiting >= count then
      free_now = false
      at = math.max(at, nth_latest(reserved, count) + per)
    elseif waiting + made >= count then
      free_now = false
      at = math.max(at, nth_latest(starts, count - waiting) + per)
    end
  end
end

for i = 1, scopes do
  local starts, reserved = KEYS[2 * i - 1], KEYS[2 * i]
  local _, per = rate_of(i)
  local into = free_now and starts or reserved
  redis.call('ZADD', into, free_now and now or at, free_now and start or member)
  redis.call('PEXPIREAT', into, math.ceil(((free_now and now or at) + per) * 1000))
end
if free_now then
  return {1, string.format('%.6f', now)}
end
return {0, string.format('%.6f', at)}
