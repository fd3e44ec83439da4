-- KEYS: ledger. ARGV: ttl ms, then (question id, JSON) pairs. The
-- field `_` marks a ledger that exists with no question yet.
redis.call('HSET', KEYS[1], '_', '')
for i = 2, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local seq
  if old then seq = string.sub(old, 1, 10) else seq = string.format('%010d', redis.call('HLEN', KEYS[1])) end
  redis.call('HSET', KEYS[1], ARGV[i], seq .. '|' .. ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
