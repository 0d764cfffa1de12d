-- Grants up to ARGV[1] slots, if the AIMD state is still the one the caller computed its
-- allowance from (else none: the caller reads the new state in the answer and asks again).
-- KEYS[1]  the slots: a sorted set, member -> when the slot frees (Redis time, microseconds):
--          its lease expiry while the call is in flight, completion + window once it completed
-- KEYS[2]  the AIMD state: a hash (base, ceiling, at, version), absent while none holds
-- ARGV     want, allowed (slots the caller's effective limit allows), the AIMD version it
--          computed that from ('' for none), lease (us), member prefix, first member number,
--          TTL of the slots key (ms)
-- Answer   {granted, held, us until the earliest held slot frees (-1: none held),
--           base, ceiling, us since the last decrease (-1: none), version}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local state = redis.call('HMGET', KEYS[2], 'base', 'ceiling', 'at', 'version')
local held = redis.call('ZCARD', KEYS[1])
local granted = 0
if (state[4] or '') == ARGV[3] then
  granted = math.max(0, math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - held))
  local expiry = string.format('%.0f', now + tonumber(ARGV[4]))
  local first = tonumber(ARGV[6])
  for i = 0, granted - 1 do
    redis.call('ZADD', KEYS[1], expiry, ARGV[5] .. ':' .. string.format('%.0f', first + i))
  end
  if granted > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
  end
end
local earliest = -1
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then
  earliest = tonumber(head[2]) - now
end
local since = -1
if state[3] then
  since = now - tonumber(state[3])
end
return {granted, held + granted, earliest, state[1] or '', state[2] or '', since, state[4] or ''}
