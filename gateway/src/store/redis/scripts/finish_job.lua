-- KEYS: jobs, callbacks, lease, outbox, due. ARGV: id, callbacks expected,
-- channel, message, then (delivery id, JSON, due ms) per delivery.
-- -1: the job had already ended; -2: a callback was added meanwhile (read again).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[2]) then return -2 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
local n = 0
for i = 5, #ARGV, 3 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[5], ARGV[i + 2], ARGV[i])
  n = n + 1
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
