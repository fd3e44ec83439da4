-- A caller's quotas: count one request against every counter, or against none.
-- KEYS: one counter per quota (one hash tag: the caller's).
-- ARGV: per key, its limit, then the unix ms at which its period ends.
-- Returns {1, count of each key after counting} or {0, i}: key i (from 1) is spent.
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used >= tonumber(ARGV[2 * i - 1]) then return {0, i} end
end
local reply = {1}
for i, key in ipairs(KEYS) do
  reply[i + 1] = redis.call('INCR', key)
  -- A minute past the reset: a replica whose clock lags a little still finds its period.
  redis.call('PEXPIREAT', key, tonumber(ARGV[2 * i]) + 60000)
end
return reply
