-- The sliding window log script of an earlier build (text members "<c>:<cost>:<b>:<o>", keys
-- named "...:swl:..."): tests/storage/test_redis_store.py writes a log with it under the
-- current key name, to check that the current script begins such a log again. Not shipped.
-- (Its replies are written as the current head.lua describes, as tests/storage reads them.)

-- Sliding window log: one sorted set per rate, an entry per admitted request, score its time
-- (_log_view and _log_take in buttress/ratelimit/_algorithms.py). An entry's member is
-- "<c>:<cost>:<b>:<o>": c, zero-padded to 16 digits, is the sum of the costs admitted into this
-- log before this entry; b is that sum before the oldest entry present when this one was added,
-- and o that oldest entry's time. The newest entry (the last one) thus gives the sum of the
-- costs in the log, c + cost - b, without reading the log: a decision reads one entry and writes
-- one, O(log N). Entries of the same time sort by member, i.e. in the order they were added (c
-- never decreases, and grows past an entry of cost 0 only with the next one); two requests of
-- cost 0 in a row may make one entry, which changes no answer.
--
-- Entries at or before now - period have left the window. They are removed when a request is
-- admitted (then the new entry carries the new b and o); peeks and rejections only read. A log
-- whose entries have all left the window is a fresh log (as the memory store's empty log, but
-- for a cost above the limit, which a limiter never sends).

if #KEYS == 1 then
  local log = KEYS[1]
  local limit, period = string.match(log, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local horizon = now - period
  local total, sum, base, oldest, newest, stale
  local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if top[1] then
    newest = tonumber(top[2])
    local c, spent, b, o = string.match(top[1], '^(%d+):(%d+):(%d+):(.+)$')
    if c and newest > horizon then
      sum, base, oldest = tonumber(c) + tonumber(spent), tonumber(b), o
      if tonumber(o) <= horizon then
        -- Some entries have left the window: the first one still in it gives b and o.
        local live = redis.call('ZRANGEBYSCORE', log, '(' .. string.format('%.17g', horizon),
          '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        base, oldest, stale = tonumber(string.match(live[1], '^(%d+):')), live[2], true
      end
      total = sum - base
    else
      -- Every entry has left the window (or the set is not one of these logs): a fresh log.
      stale = true
    end
  end
  if total == nil or total + cost <= limit then
    if consume then
      if stale then
        if total == nil then
          redis.call('DEL', log)
        else
          redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.17g', horizon))
        end
      end
      -- Entries stay in the order they were added even if the clock went back.
      local at = now
      if total ~= nil and newest > now then
        at = newest
      end
      local stamp = string.format('%.17g', at)
      if total == nil then
        sum, base, oldest = 0, 0, stamp
      end
      redis.call('ZADD', log, stamp, string.format('%016d:%d:%d:%s', sum, cost, base, oldest))
      redis.call('PEXPIRE', log, string.format('%d', math.ceil((at + period - now) * 1000) + 1))
    end
    local left = limit - cost
    if total ~= nil then
      left = limit - total - cost
    end
    if left < 0 then
      left = 0
    end
    return struct.pack('>dd', left, period)
  end
  -- The request fits once enough of the oldest entries have left the window: at the time of
  -- the first entry in the window whose c + cost reaches base + need. Every entry frees at
  -- least one unit (unless its cost was 0), so `need` entries usually suffice.
  local need, retry, found, first = total + cost - limit, 0.0, false, 0
  local batch = need
  if batch < 16 then
    batch = 16
  end
  local after = '(' .. string.format('%.17g', horizon)
  while not found do
    local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
      'LIMIT', first, batch)
    for i = 1, #entries, 2 do
      local c, spent = string.match(entries[i], '^(%d+):(%d+):')
      if tonumber(c) + tonumber(spent) - base >= need then
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
  local left, reset = limit - total, newest + period - now
  if left < 0 then
    left = 0
  end
  if not (reset > 0.0) then
    reset = 0.0
  end
  if not (retry > 0.0) then
    retry = 0.0
  end
  return struct.pack('>ddd', left, reset, retry)
end

-- Several rates: the same steps, rate by rate.
local count = #KEYS
local fits, remaining, resets, retries = {}, {}, {}, {}
local totals, sums, bases, oldests, newests, stales, periods = {}, {}, {}, {}, {}, {}, {}
local allowed = true
for i = 1, count do
  local log = KEYS[i]
  local limit, period = string.match(log, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local horizon = now - period
  local total, sum, base, oldest, newest, stale
  local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if top[1] then
    newest = tonumber(top[2])
    local c, spent, b, o = string.match(top[1], '^(%d+):(%d+):(%d+):(.+)$')
    if c and newest > horizon then
      sum, base, oldest = tonumber(c) + tonumber(spent), tonumber(b), o
      if tonumber(o) <= horizon then
        local live = redis.call('ZRANGEBYSCORE', log, '(' .. string.format('%.17g', horizon),
          '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        base, oldest, stale = tonumber(string.match(live[1], '^(%d+):')), live[2], true
      end
      total = sum - base
    else
      stale = true
    end
  end
  totals[i], sums[i], bases[i], oldests[i] = total, sum, base, oldest
  newests[i], stales[i], periods[i] = newest, stale, period
  if total == nil then
    fits[i], remaining[i], resets[i], retries[i] = true, limit - cost, period, 0.0
  elseif total + cost <= limit then
    fits[i], remaining[i], resets[i], retries[i] = true, limit - total - cost, period, 0.0
  else
    allowed = false
    local need, retry, found, first = total + cost - limit, 0.0, false, 0
    local batch = need
    if batch < 16 then
      batch = 16
    end
    local after = '(' .. string.format('%.17g', horizon)
    while not found do
      local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
        'LIMIT', first, batch)
      for j = 1, #entries, 2 do
        local c, spent = string.match(entries[j], '^(%d+):(%d+):')
        if tonumber(c) + tonumber(spent) - base >= need then
          retry = tonumber(entries[j + 1]) + period - now
          found = true
          break
        end
      end
      if #entries < 2 * batch then
        break
      end
      first = first + batch
    end
    fits[i], remaining[i], resets[i], retries[i] = false, limit - total, newest + period - now,
      retry
  end
end

local function commit(i)
  local log, total, period = KEYS[i], totals[i], periods[i]
  if stales[i] then
    if total == nil then
      redis.call('DEL', log)
    else
      redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.17g', now - period))
    end
  end
  local at = now
  if total ~= nil and newests[i] > now then
    at = newests[i]
  end
  local stamp = string.format('%.17g', at)
  local sum, base, oldest = sums[i], bases[i], oldests[i]
  if total == nil then
    sum, base, oldest = 0, 0, stamp
  end
  redis.call('ZADD', log, stamp, string.format('%016d:%d:%d:%s', sum, cost, base, oldest))
  redis.call('PEXPIRE', log, string.format('%d', math.ceil((at + period - now) * 1000) + 1))
end
