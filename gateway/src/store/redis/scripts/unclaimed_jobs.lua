-- KEYS: jobs. ARGV: lease key prefix, callbacks key prefix.
-- Returns job JSON, callbacks JSON array, ... for jobs without a lease.
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[1] .. all[i]) == 0 then
    table.insert(out, all[i + 1])
    table.insert(out, '[' .. table.concat(redis.call('SMEMBERS', ARGV[2] .. all[i]), ',') .. ']')
  end
end
return out
