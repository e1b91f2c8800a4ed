-- Count the live leases. KEYS[1]: the lease set. ARGV: now ('' for the server's clock).
local now = clock()
return redis.call('ZCOUNT', KEYS[1], '(' .. num(now), '+inf')
