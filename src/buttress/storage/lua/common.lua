-- Helpers shared by every buttress script; RedisStorage puts this file in front of each one.
--
-- Times are seconds as Lua numbers (IEEE doubles, like Python floats), so the arithmetic below
-- matches buttress/ratelimit/_algorithms.py bit for bit. Numbers go back to Redis as strings
-- (Redis truncates Lua numbers to integers), formatted with 17 significant digits so that they
-- parse back to the very same double.

-- ARGV[1] is the time to use, or '' for the Redis server's own clock (what production uses; an
-- explicit time is for tests). Redis 5+ replicates a script's effects, not the script, so TIME
-- may be read before writing; replicate_commands asks the same of Redis 3.2 and 4.
local function clock()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  if redis.replicate_commands then
    redis.replicate_commands()
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end

-- One microsecond of slack for the token bucket and GCRA: EPSILON in _algorithms.py.
local EPSILON = 1e-6

local function num(x)
  return string.format('%.17g', x)
end

-- A whole number as a command argument (Redis may write large Lua numbers with an exponent).
local function int(x)
  return string.format('%d', x)
end

-- Python's max(a, b) and min(a, b): the first argument unless the second is strictly beyond it.
local function pymax(a, b)
  if b > a then
    return b
  end
  return a
end

local function pymin(a, b)
  if b < a then
    return b
  end
  return a
end

-- Python's int(x) on a float: truncation toward zero.
local function trunc(x)
  if x < 0 then
    return math.ceil(x)
  end
  return math.floor(x)
end

-- Milliseconds from `now` until `expires` rounded up, plus one: Redis expires keys on its
-- millisecond clock, and a key must never vanish before its state is the same as a fresh one.
local function ttl_ms(expires, now)
  local ms = math.ceil((expires - now) * 1000)
  if ms > 0 then
    return ms + 1
  end
  return 0
end

-- Store `value` at `key` until `expires`, or delete the key when that is not in the future.
local function put(key, value, expires, now)
  local ms = ttl_ms(expires, now)
  if ms > 0 then
    redis.call('SET', key, value, 'PX', int(ms))
  else
    redis.call('DEL', key)
  end
end

-- Split a state string of numbers separated by spaces into a table of numbers (nil if missing).
local function numbers(raw)
  if not raw then
    return nil
  end
  local values = {}
  for word in string.gmatch(raw, '%S+') do
    values[#values + 1] = tonumber(word)
  end
  return values
end

-- Make a lease set expire with its latest lease (a set of expired leases is an empty one).
local function expire_leases(leases, now)
  local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  local ms = 0
  if #latest > 0 then
    ms = ttl_ms(tonumber(latest[2]), now)
  end
  if ms > 0 then
    redis.call('PEXPIRE', leases, int(ms))
  else
    redis.call('DEL', leases)
  end
end
