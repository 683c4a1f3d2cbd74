-- Take or keep the probing of due targets. A target has one prober at a time, and keeps it
-- while that process lives (it renews the lease with every reading it stores), so a host sees
-- one probe per interval, over one connection, however many workers ask.
-- KEYS: the targets' probe-lock keys
-- ARGV: the named arguments
local token, lease_ms = unpack(ARGV, 1, 2)
local won = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if not holder then
    redis.call('SET', key, token, 'PX', lease_ms)
    won[i] = 1
  elseif holder == token then
    redis.call('PEXPIRE', key, lease_ms)
    won[i] = 1
  else
    won[i] = 0
  end
end
return won
