-- Helpers of the lease scripts (and reset); RedisStorage puts this file in front of each one.
-- (The decision scripts start with head.lua instead: straight code, no helpers.)
--
-- Times are seconds as Lua numbers (IEEE doubles, like Python floats). Numbers go back to Redis
-- as strings, formatted with 17 significant digits so that they parse back to the same double.

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

local function num(x)
  return string.format('%.17g', x)
end

-- Make a lease set expire with its latest lease (a set of expired leases is an empty one):
-- milliseconds rounded up, plus one, so that Redis never drops a live lease early.
local function expire_leases(leases, now)
  local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  local ms = 0
  if #latest > 0 then
    ms = math.ceil((tonumber(latest[2]) - now) * 1000)
  end
  if ms > 0 then
    redis.call('PEXPIRE', leases, string.format('%d', ms + 1))
  else
    redis.call('DEL', leases)
  end
end
