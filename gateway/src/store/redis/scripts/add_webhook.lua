-- KEYS: jobs, webhooks (the `callbacks:<id>` set). ARGV: id, target JSON.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
