-- Ends the slots ARGV[4..]: a used one (its call completed) is held until now + window, even
-- if its lease ran out meanwhile; an unused one (no call was made) frees at once.
-- KEYS[1]  the slots (see acquire.lua)
-- ARGV     '1' used or '0' unused, window (us), TTL of the slots key (ms), members...
-- Answer   the number of members that were still held
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local found = 0
if ARGV[1] == '1' then
  local expiry = string.format('%.0f', now + tonumber(ARGV[2]))
  for i = 4, #ARGV do
    -- ZADD answers 1 for a member it had to add back (its lease had expired): not found.
    found = found + 1 - redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  for i = 4, #ARGV do
    found = found + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return found
