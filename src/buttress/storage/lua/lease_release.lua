-- Free a lease's slot. KEYS[1]: the lease set. ARGV: now ('' for the server's clock), lease id.
-- Returns 1 when the lease was held and live, else 0 (an expired lease is removed all the same:
-- its slot was already free).

local now = clock()
local leases, lease = KEYS[1], ARGV[2]
local expires = redis.call('ZSCORE', leases, lease)
if not expires then
  return 0
end
redis.call('ZREM', leases, lease)
if tonumber(expires) > now then
  return 1
end
return 0
