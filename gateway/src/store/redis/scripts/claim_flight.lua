-- KEYS: summary, flight. ARGV: replica, ttl ms.
local s = redis.call('GET', KEYS[1])
if s then return 'S' .. s end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'W' end
return 'H' .. redis.call('PTTL', KEYS[2])
