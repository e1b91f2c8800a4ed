-- The start of every decision script; RedisStorage puts it in front of <algorithm>.lua.
--
-- KEYS: the state key of each rate, '{<prefix>:<key>}:<alg>:<limit>:<period>'. Each script
--       reads limit and period back from the key's name: the period is written there by
--       Python's repr, so tonumber gives back the very same double.
-- ARGV[1]: the request's cost, or -1 - cost for a peek (decide, change nothing); absent for a
--          cost of 1 (the common case: one argument less to send).
-- ARGV[2]: the time to decide at (tests); absent for the Redis server's own clock (production).
--
-- Reply, one string of big-endian doubles (struct.pack; cheaper to build here and to read in
-- Python than an array, or than numbers formatted with 17 digits, and as exact): for one rate,
-- <remaining> <reset_after> when admitted (16 bytes) and <remaining> <reset_after> <retry_after>
-- when rejected (24 bytes); for several, the same preceded by the binding rate's index (from 1).
--
-- Times are seconds as Lua numbers (IEEE doubles, like Python floats): the arithmetic matches
-- buttress/ratelimit/_algorithms.py bit for bit, statement by statement. Each script has a
-- straight path for one rate (no tables, no closures) and a loop for several, all or nothing.
-- The loop's tables are made with two slots ({false, false}, {0, 0}): filling an empty table
-- allocates as it grows, which cost about 0.6 µs per two-rate decision.
-- A state is written back with a TTL (milliseconds, rounded up, plus one) that ends once it is
-- the same as a fresh state, so that Redis frees it. The TTL goes as a string: Redis would
-- format a Lua number with 17 digits, which costs more. When a state's expiry has not moved
-- (the same fixed window, the same counter window) and the time is the server's, the key keeps
-- its TTL (KEEPTTL, Redis 6.0+): it already ends at that expiry.
--
-- limit and period are read from the end of the key's name: at most 40 characters there
-- (":<limit, 16 digits at most>:<period, about 21 characters at most>"), so the search starts
-- 48 characters from the end, whatever the length of the limiter key.

local cost, consume = 1, true
if ARGV[1] then
  cost = tonumber(ARGV[1])
  if cost < 0 then
    cost, consume = -1 - cost, false
  end
end
local now = ARGV[2]
local clocked = not now -- on the server's clock (a key's TTL then counts on that same clock)
if clocked then
  -- Redis 5+ replicates a script's effects, not the script: TIME may be read before writing.
  -- (Lua's arithmetic converts the two strings exactly as tonumber would.)
  local time = redis.call('TIME')
  now = time[1] + time[2] / 1000000
else
  now = tonumber(now)
end
local EPSILON = 1e-6 -- EPSILON in _algorithms.py (token bucket and GCRA)
