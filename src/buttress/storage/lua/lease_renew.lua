-- Extend a live lease to ttl from now. KEYS[1]: the lease set. ARGV: now ('' for the server's
-- clock), lease id, ttl. Returns 1 when renewed, 0 when the lease had expired or was unknown.

local now = clock()
local leases, lease, ttl = KEYS[1], ARGV[2], tonumber(ARGV[3])
local expires = redis.call('ZSCORE', leases, lease)
if not expires or tonumber(expires) <= now then
  return 0
end
redis.call('ZADD', leases, num(now + ttl), lease)
expire_leases(leases, now)
return 1
