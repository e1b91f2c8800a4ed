-- Sliding window log: two keys per rate. KEYS 1 is a sorted set of the admitted requests, score
-- the time, member "<time>:<sequence number>:<cost>"; KEYS 2 holds the sum of their costs (and
-- the last sequence number), so that a decision costs O(log N) and not O(N) (_log_view and
-- _log_take in buttress/ratelimit/_algorithms.py).

local KEYS_PER_RATE = 2

local function cost_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Drop the entries at or before now - period and read the sum of the rest. Like Log.purge in
-- the memory store this happens on every call, peeks and rejections included: it only forgets
-- requests that no longer count, and keeps the set small under a flood of rejections.
-- KEYS 2 holds "<sum of costs> <sequence number of the last entry>".
local function load(rate, now)
  local log, sum = rate.keys[1], rate.keys[2]
  local horizon = num(now - rate.period)
  local total, sequence
  local raw = redis.call('GET', sum)
  if raw and redis.call('EXISTS', log) == 1 then
    total, sequence = string.match(raw, '^(%S+) (%S+)$')
    total, sequence = tonumber(total), tonumber(sequence)
  else
    -- No sum, or no log: a fresh log, unless one of the two keys was lost (evicted under
    -- maxmemory, deleted by hand), when the log itself is counted.
    total, sequence = 0, 0
    local members = redis.call('ZRANGE', log, 0, -1)
    for i = 1, #members do
      total = total + cost_of(members[i])
      sequence = pymax(sequence, tonumber(string.match(members[i], ':(%d+):')))
    end
    if #members == 0 then
      total = nil
    end
  end
  if total then
    local expired = redis.call('ZRANGEBYSCORE', log, '-inf', horizon)
    if #expired > 0 then
      for i = 1, #expired do
        total = total - cost_of(expired[i])
      end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', horizon)
      if redis.call('EXISTS', log) == 1 then
        redis.call('SET', sum, num(total) .. ' ' .. num(sequence), 'KEEPTTL')
      else
        -- Every entry left the window: the memory store's empty log, as good as a fresh one.
        redis.call('DEL', sum)
        total = nil
      end
    end
  end
  rate.total, rate.sequence = total, sequence
end

local function view(rate, now, cost)
  local log, total, limit, period = rate.keys[1], rate.total, rate.limit, rate.period
  if total == nil then
    return true, limit - cost, period, 0.0
  end
  if total + cost <= limit then
    return true, limit - total - cost, period, 0.0
  end
  -- The request fits once enough of the oldest entries have left the window. Every entry
  -- frees at least one unit (unless its cost was 0), so `need` entries usually suffice.
  local need, freed, retry, found = total + cost - limit, 0, 0.0, false
  local first, batch = 0, pymax(need, 16)
  while not found do
    local entries = redis.call('ZRANGE', log, int(first), int(first + batch - 1), 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + cost_of(entries[i])
      if freed >= need then
        retry = tonumber(entries[i + 1]) + period - now
        found = true
        break
      end
    end
    if #entries < 2 * batch then
      break
    end
    first = first + batch
  end
  -- An empty log here means cost > limit (which never fits): count from now, as the reference.
  local newest = tonumber(redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2] or now)
  return false, limit - total, newest + period - now, retry
end

local function take(rate, now, cost)
  local log, sum = rate.keys[1], rate.keys[2]
  local at = num(now)
  local sequence = (rate.sequence or 0) + 1
  redis.call('ZADD', log, at, at .. ':' .. num(sequence) .. ':' .. num(cost))
  local ms = ttl_ms(now + rate.period, now)
  if ms > 0 then
    local value = num((rate.total or 0) + cost) .. ' ' .. num(sequence)
    redis.call('SET', sum, value, 'PX', int(ms))
    redis.call('PEXPIRE', log, int(ms))
  else
    -- A period too short to register at this time's precision: nothing stays recorded.
    redis.call('DEL', log, sum)
  end
end
