-- Shared by acquire.lua and release_slots.lua: the turns of the tasks that want a scope's slots
-- (stride scheduling, Waldspurger 1995). Each task has a virtual `pass`; a slot it is granted
-- moves its pass on by 1/weight; a free slot is for the waiting task with the lowest pass, so
-- under a tight limit a task of weight 3 is granted three slots for one of weight 1's. A task
-- that arrives, or comes back after a spell away, starts level with the others (share_turn), so
-- it brings no credit. Same rules as feedback/levers/shares.py (tests/test_shares.py checks both).
-- The share hash (keys.share_key): task -> 'pass seen handed weight', on Redis's clock:
--   seen   the task last asked for a slot here;
--   handed release_slots last handed one of its parked jobs a slot (0 once a job of it took one).
-- A task waits while jobs of it are parked on its turn (`slot-class:SCOPE|TASK`) or one it was
-- handed is on its way back (within `active` seconds); it is active while it waits or has asked
-- within `active` seconds. One that has done neither for `forget` seconds is forgotten.

local SHARE_EPSILON = 1e-9

local function share_read(share_key)
  local raw = redis.call('HGETALL', share_key)
  local tasks = {}
  for i = 1, #raw, 2 do
    local p, s, h, w = string.match(raw[i + 1], '^(%S+) (%S+) (%S+) (%S+)$')
    if p then
      tasks[raw[i]] = {pass = tonumber(p), seen = tonumber(s), handed = tonumber(h), weight = tonumber(w)}
    end
  end
  return tasks
end

local function share_write(share_key, task, t)
  redis.call('HSET', share_key, task,
    string.format('%.17g %.6f %.6f %.17g', t.pass, t.seen, t.handed, t.weight))
end

local function share_park_key(class_park_prefix, scope, task)
  return class_park_prefix .. scope .. '|' .. task
end

-- Whether `task` (its record `t`) waits for a slot of `scope` now.
local function share_waiting(class_park_prefix, scope, task, t, now, active)
  if now - t.handed < active then return true end
  return redis.call('EXISTS', share_park_key(class_park_prefix, scope, task)) == 1
end

-- Look at the tasks of `scope` from `task`'s side: returns its record (new, or brought up to the
-- others' pass if it was away), and the waiting task that goes before it, if any (nil: its turn,
-- or nobody else waits). `waits_any` says whether any other task waits at all. The others' pass
-- is the lowest among those active, else (nobody is) the highest known: either way, a task that
-- comes starts level with the rest, never behind them with a claim to catch up.
local function share_turn(share_key, class_park_prefix, scope, task, weight, now, active, forget)
  local tasks = share_read(share_key)
  local lowest_active, highest, first, first_pass, waits_any = nil, nil, nil, nil, false
  for name, t in pairs(tasks) do
    if name ~= task then
      local waiting = share_waiting(class_park_prefix, scope, name, t, now, active)
      if waiting or now - t.seen < active then
        if lowest_active == nil or t.pass < lowest_active then lowest_active = t.pass end
      elseif now - t.seen > forget then
        redis.call('HDEL', share_key, name)
      end
      if highest == nil or t.pass > highest then highest = t.pass end
      if waiting then
        waits_any = true
        if first_pass == nil or t.pass < first_pass then first, first_pass = name, t.pass end
      end
    end
  end
  local level = lowest_active or highest or 0
  local me = tasks[task]
  if me == nil then
    me = {pass = level, seen = now, handed = 0, weight = weight}
  elseif not (now - me.seen < active or share_waiting(class_park_prefix, scope, task, me, now, active)) then
    if level > me.pass then me.pass = level end  -- away: it banked no credit meanwhile
  end
  me.seen, me.weight = now, weight
  if first_pass ~= nil and first_pass < me.pass - SHARE_EPSILON then
    return me, first, waits_any
  end
  return me, nil, waits_any
end
