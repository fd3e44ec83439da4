-- KEYS: outbox, due. ARGV: now ms, lease until ms, limit.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local d = redis.call('HGET', KEYS[1], id)
  if d then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, d)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
