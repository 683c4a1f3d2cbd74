-- A slot under every limit a job falls under, or the first limit that is full: all or nothing.
-- A refusal records the scope in the slot-waits hash in the same step, so the slot its job
-- will wait for is handed out when one frees (workers/lua/release_slots.lua).
-- Leases expire on Redis's clock, `ttl` after their owner's last beat (the job's heartbeat
-- renews them, workers/lua/heartbeat.lua). A lapsed lease is purged only when absence may be
-- judged (fleet_clock.lua): after a silence of Redis itself, a live job's lease may look lapsed
-- until its owner beats again, and taking its slot would run one job too many.
-- A paced scope (a budget's duty cycle below one job at a time) also refuses while its pace key
-- holds a Redis time still to come (set as its last job ended, feedback/lua/release_pace.lua),
-- and notes when each of its leases was taken, so that release can time the job. A job refused
-- for the pace waits parked for a slot, as one refused a full limit: release_slots.lua hands one
-- of them the next start, due at its time, rather than every refused job coming back at it.
-- Tasks share a scope's slots by weight (share.lua): a free slot is refused to the job's task
-- while another task that waits for one has the lower pass, and low priority (`reserve`) yields
-- to any task that waits. A job granted its slots leaves the lists it was parked on for them.
-- KEYS: the slot-waits hash, fleet-seen, sweep-after, then lease set, limit key, pace key and
--       share hash per scope
-- ARGV: the named arguments, then each scope's name, default limit and whether it is paced ('1')
-- returns: {0, 0, 0, '', ''} when every slot was taken, else {index of the full scope, in use,
--          limit, '', ''}, or for a scope refused for its pace {index, in use, limit, seconds
--          still to wait, ''}, or refused for its share {index, in use, limit, '', the task first}
local ttl, member, reserve, gap, grace, started_prefix, task, weight, parked_member, slot_park_prefix,
      class_park_prefix, active, forget, handed_prefix = unpack(ARGV, 1, 14)
local FIRST_SCOPE, FIRST_QUAD, STARTED_TTL = 15, 4, 86400
ttl, reserve, gap, grace = tonumber(ttl), tonumber(reserve), tonumber(gap), tonumber(grace)
weight, active, forget = tonumber(weight), tonumber(active), tonumber(forget)
local now = fleet_now()
note_fleet(KEYS[2], KEYS[3], now, gap, grace)
local purge = absence_judgeable(KEYS[3], now)
local mine = {}  -- per scope: this task's share record, written when the slots are taken
for i = FIRST_QUAD, #KEYS, 4 do
  if purge then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  end
  local n = (i - FIRST_QUAD) / 4
  local at = FIRST_SCOPE + 3 * n
  local scope, default, paced = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local limit = tonumber(redis.call('GET', KEYS[i + 1]) or default)
  local in_use = redis.call('ZCARD', KEYS[i])
  if paced == '1' then
    local not_before = tonumber(redis.call('GET', KEYS[i + 2]) or '')
    if not_before and not_before > now then
      redis.call('HSET', KEYS[1], scope, default)  -- it waits parked; release_slots hands the next start
      return {n + 1, in_use, limit, string.format('%.6f', not_before - now), ''}
    end
  end
  local keep_free = math.max(0, math.min(reserve, limit - 1))  -- a limit of 0 (a budget learning) keeps none
  if reserve > 0 then
    local _, _, waits_any = share_turn(KEYS[i + 3], class_park_prefix, scope, '', weight, now, active, forget)
    if in_use + keep_free >= limit or (waits_any and in_use < limit) then
      redis.call('HSET', KEYS[1], scope, default)
      return {n + 1, in_use, limit, '', waits_any and 'normal priority' or ''}
    end
  else
    local me, first = share_turn(KEYS[i + 3], class_park_prefix, scope, task, weight, now, active, forget)
    local full = in_use + keep_free >= limit
    if full or first then
      share_write(KEYS[i + 3], task, me)  -- it asked: it is active, and its jobs will wait their turn
      redis.call('HSET', KEYS[1], scope, default)  -- the refused job will wait on this scope
      return {n + 1, in_use, limit, '', full and '' or first}
    end
    mine[i] = me
  end
end
for i = FIRST_QUAD, #KEYS, 4 do
  redis.call('ZADD', KEYS[i], now + ttl, member)
  local at = FIRST_SCOPE + 3 * (i - FIRST_QUAD) / 4
  local scope = ARGV[at]
  if ARGV[at + 2] == '1' then
    redis.call('SET', started_prefix .. scope .. '|' .. member, string.format('%.6f', now), 'EX', STARTED_TTL)
    redis.call('DEL', handed_prefix .. scope)  -- the start is taken: the next job end hands the next one
  end
  local me = mine[i]
  if me then
    me.pass, me.handed = me.pass + 1 / weight, 0
    share_write(KEYS[i + 3], task, me)
    if parked_member ~= '' then
      redis.call('ZREM', share_park_key(class_park_prefix, scope, task), parked_member)
      redis.call('ZREM', slot_park_prefix .. scope, parked_member)
    end
  end
end
return {0, 0, 0, '', ''}
