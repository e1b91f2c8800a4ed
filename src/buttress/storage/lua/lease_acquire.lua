-- Take a concurrency slot. KEYS[1]: the key's lease set (sorted set, member the lease id, score
-- the time it expires). ARGV: now ('' for the server's clock), limit, lease id, ttl.
-- Returns 1 when granted (or renewed, for a live lease id already held), else 0.

local now = clock()
local leases, limit, lease, ttl = KEYS[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', leases, '-inf', num(now))
if not redis.call('ZSCORE', leases, lease) and redis.call('ZCARD', leases) >= limit then
  return 0
end
redis.call('ZADD', leases, num(now + ttl), lease)
expire_leases(leases, now)
return 1
