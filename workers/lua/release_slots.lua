-- Slots came free (a job ended, a lease lapsed, a limit rose): as many jobs waiting for a slot go
-- back to their queues, normal priority first. Among normal jobs, the tasks take turns by weight
-- (feedback/lua/share.lua): each slot goes to the oldest parked job of the waiting task with the
-- lowest pass (counted ahead here for each slot handed, and for real when the job takes it), and
-- the task is marked handed, so its job's way back to a worker is not taken by another task's.
-- Jobs parked without a task's turn (by an easeoff before shares) go after, earliest due first.
-- Low-priority waiters get a slot only while another stays free (the reserve acquire.lua keeps).
-- A paced scope (a budget's duty cycle) whose next start is still to come (its pace key,
-- feedback/lua/release_pace.lua) sends nobody back now: one waiting job, by the same turns, is
-- handed that start `pace_lead` seconds ahead of its time — back to its queue at once when the
-- start is that close, else rescheduled to then, with the fleet's next-due time lowered so
-- promotion looks then — and the worker that claims it waits the rest in place; once per start
-- (the handed key, cleared when a job takes the start, acquire.lua, and lapsing shortly after
-- the start should a handed job never come).
-- KEYS: the slot-waits hash (scope -> default limit; entries stay, so a job refused a slot just
--       now, not yet parked, is never left out: one per limited scope)
-- ARGV: the named arguments, then the scopes to look at (none: every waiting scope)
local now, job_prefix, cooldown_prefix, parked_prefix, task_prefix, scheduled_prefix, queue_prefix,
      leases_prefix, limit_prefix, slot_prefix, slot_low_prefix, share_prefix, class_park_prefix, pace_prefix,
      handed_prefix, next_due_key, pace_lead = unpack(ARGV, 1, 17)
local FIRST_SCOPE = 18
local HANDED_GRACE_MS = 2000  -- a handed start not taken this long after its time goes to another waiter
local MOST_STALE = 100  -- entries of jobs no longer waiting (run or gone) cleared per scope and call, at most
now, pace_lead = tonumber(now), tonumber(pace_lead)
local p = {job_prefix = job_prefix, cooldown_prefix = cooldown_prefix, parked_prefix = parked_prefix,
           task_prefix = task_prefix}
local scopes = {}
for i = FIRST_SCOPE, #ARGV do scopes[#scopes + 1] = ARGV[i] end
if #scopes == 0 then scopes = redis.call('HKEYS', KEYS[1]) end

local function to_queue(member)
  return promote_member(member, now, p, scheduled_prefix, queue_prefix)
end

-- A sender that hands a parked job a start at `at`: its scheduled time moves there (it waits in
-- nothing else: a job refused for pace parks on the slot lists only).
local function at_time(at)
  return function(member)
    local bar = string.find(member, '|', 1, true)
    local job_id, queue_name = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
    local scheduled_key = scheduled_prefix .. queue_name
    if not redis.call('ZSCORE', scheduled_key, job_id) then return 0 end
    redis.call('ZADD', scheduled_key, at, job_id)
    local next_due = tonumber(redis.call('GET', next_due_key) or '')
    if not next_due or at < next_due then
      redis.call('SET', next_due_key, string.format('%.6f', at))
    end
    return 1
  end
end

local function hand_out(park, n, send)
  if n <= 0 then return 0 end
  local moved = 0
  for _, member in ipairs(redis.call('ZRANGE', park, 0, n - 1)) do
    redis.call('ZREM', park, member)
    moved = moved + send(member)
  end
  return moved
end

-- Up to `n` slots of `scope` to the parked jobs of the tasks whose turn it is. Returns the jobs
-- moved, and whether any task's list was left with jobs in it.
local function hand_out_by_turn(scope, normal, n, send)
  local share_key = share_prefix .. scope
  local tasks = share_read(share_key)
  local pass = {}
  for name, t in pairs(tasks) do pass[name] = t.pass end
  local moved, stale = 0, 0
  while moved < n do
    local pick, pick_head, pick_member = nil, nil, nil
    for name, t in pairs(tasks) do
      local head = redis.call('ZRANGE', share_park_key(class_park_prefix, scope, name), 0, 0, 'WITHSCORES')
      if head[1] then
        local due = tonumber(head[2])
        local better = pick == nil or pass[name] < pass[pick] - SHARE_EPSILON
          or (math.abs(pass[name] - pass[pick]) <= SHARE_EPSILON and due < pick_head)
        if better then pick, pick_head, pick_member = name, due, head[1] end
      end
    end
    if pick == nil then return moved, false end
    redis.call('ZREM', share_park_key(class_park_prefix, scope, pick), pick_member)
    redis.call('ZREM', normal, pick_member)
    if send(pick_member) == 1 then
      moved = moved + 1
      pass[pick] = pass[pick] + 1 / tasks[pick].weight
      local t = tasks[pick]
      t.handed = now
      share_write(share_key, pick, t)
    else
      stale = stale + 1
      if stale >= MOST_STALE then return moved, true end
    end
  end
  return moved, true
end

local moved = 0
for _, scope in ipairs(scopes) do
  local default = redis.call('HGET', KEYS[1], scope)
  if default then
    local normal, low = parked_prefix .. slot_prefix .. scope, parked_prefix .. slot_low_prefix .. scope
    local limit = tonumber(redis.call('GET', limit_prefix .. scope) or default)
    local free = limit - redis.call('ZCOUNT', leases_prefix .. scope, now, '+inf')
    local waiting = redis.call('ZCARD', normal)
    local n = math.min(free, waiting)
    local pace_at = tonumber(redis.call('GET', pace_prefix .. scope) or '')
    if pace_at and pace_at > now then
      local ms = math.ceil((pace_at - now) * 1000) + HANDED_GRACE_MS
      if n > 0 and redis.call('SET', handed_prefix .. scope, '1', 'NX', 'PX', ms) then
        local at = pace_at - pace_lead
        local send = at <= now and to_queue or at_time(at)
        local by_turn, left = hand_out_by_turn(scope, normal, 1, send)
        if by_turn == 0 and not left then
          by_turn = hand_out(normal, 1, send)
        end
        if at <= now then moved = moved + by_turn end
      end
    elseif redis.call('EXISTS', handed_prefix .. scope) == 0 then  -- else a handed start's job is on its way
      if n > 0 then
        local by_turn, left = hand_out_by_turn(scope, normal, n, to_queue)
        moved = moved + by_turn
        if not left then
          moved = moved + hand_out(normal, n - by_turn, to_queue)
        end
      end
      free = free - n
      moved = moved + hand_out(low, free - math.max(0, math.min(1, limit - 1)), to_queue)  -- limit 0: none
    end
  end
end
return moved
