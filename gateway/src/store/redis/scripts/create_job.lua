-- KEYS: jobs, lease. ARGV: id, job JSON, replica, lease ms.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
