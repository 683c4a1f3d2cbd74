-- Log a scope's verdict flip (held <-> admitted) once, fleet-wide, however many probers see it.
-- One GET while nothing changes (every interval); the events only when it does.
-- KEYS: verdicts (JSON), events stream, event counts
-- ARGV: the named arguments, then pairs: scope, event text
local now, maxlen, state = unpack(ARGV, 1, 3)
local FIRST_PAIR = 4
local stored = redis.call('GET', KEYS[1])
if stored == state then return 0 end
local old = stored and cjson.decode(stored) or {}
local new = cjson.decode(state)
local flipped = 0
for i = FIRST_PAIR, #ARGV, 2 do
  local scope = ARGV[i]
  if old[scope] ~= new[scope] and (old[scope] or new[scope] == 'held') then  -- a healthy first sight is no flip
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'at', now, 'kind', 'verdict',
               'text', ARGV[i + 1], 'who', 'easeoff', 'why', '')
    redis.call('HINCRBY', KEYS[3], 'verdict', 1)
    flipped = flipped + 1
  end
end
redis.call('SET', KEYS[1], state)
return flipped
