-- Stores a decrease of the effective limit that the caller computed (gateway.budget.aimd),
-- unless the last one is less than the holdoff old (the same burst), or the state is no longer
-- the one the caller computed from (it then reads the new state in the answer).
-- KEYS[1]  the AIMD state (see acquire.lua)
-- ARGV     holdoff (us), the version the caller computed from ('' for none), base, ceiling,
--          TTL of the state (ms): it outlives the recovery it describes
-- Answer   {1 if stored else 0, base, ceiling, us since the last decrease (-1: none), version}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'base', 'ceiling', 'at', 'version')
local at = tonumber(state[3])
if (at and now - at < tonumber(ARGV[1])) or (state[4] or '') ~= ARGV[2] then
  local since = -1
  if at then
    since = now - at
  end
  return {0, state[1] or '', state[2] or '', since, state[4] or ''}
end
local version = string.format('%d', (tonumber(state[4]) or 0) + 1)
redis.call('HSET', KEYS[1], 'base', ARGV[3], 'ceiling', ARGV[4],
  'at', string.format('%.0f', now), 'version', version)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[3], ARGV[4], 0, version}
