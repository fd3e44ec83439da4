-- KEYS: jobs, lease. ARGV: id, replica, lease ms. Ours, or free again
-- (it expired while the store was unreachable): extended. Another's: lost.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
