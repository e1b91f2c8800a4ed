-- Sliding window log: one sorted set per rate, an entry per admitted request, score its time
-- (_log_view and _log_take in buttress/ratelimit/_algorithms.py). An entry's member is
-- "<c>:<cost>:<b>:<o>\0<f>:<e>":
--   c  the sum of the costs admitted into this log before this entry, zero-padded to 16 digits;
--   b  that sum before the oldest entry in the window when this one was added, o its time;
--   f  that sum before the oldest entry still in the set (f <= b: the entries from f up to b
--      have left the window but are not removed yet);
--   e  the time, on the server's clock, until which the key lives; empty when unknown.
-- The newest entry (the last one) thus gives the sum of the costs in the window, c + cost - b,
-- without reading the log: a decision reads one entry and writes one, O(log N). Entries of the
-- same time sort by member, i.e. in the order they were added (c never decreases, and grows past
-- an entry of cost 0 only with the next one); two requests of cost 0 in a row may make one entry,
-- which changes no answer.
--
-- Members written by earlier versions end at o: f and e are then unknown, and the next admission
-- removes the stale entries and sets the expiry. The NUL byte keeps the new members readable by
-- those versions (a rolling upgrade): Lua 5.1's tonumber stops at it, so o still reads as a
-- number, and string.format's %s stops at it, so they write o back alone, as a member of their
-- own format, which this script reads as above.
--
-- Entries at or before now - period have left the window; peeks and rejections only read. An
-- admission that finds entries newly out of the window reads the first one still in it (for b
-- and o), but removes the stale ones only once their costs add up to SWEEP (or when f is
-- unknown, or the request costs 0). A limiter's requests cost at least 1, so at most SWEEP - 1
-- stale entries remain after an admission (with requests of cost 0, at most as many as were in
-- the window). Stale entries come before the window (times only grow along the log), where no
-- read looks but the retry search, in which they free nothing (their c + cost <= b). A log whose
-- entries have all left the window is a fresh log (as the memory store's empty log, but for a
-- cost above the limit, which a limiter never sends): it is deleted and begun again.
--
-- Expiry: on the server's clock an admission at `at` needs the key to live until at + period;
-- it gets at + period + period / 8 (kept as e), refreshed only once at + period passes e, so a
-- busy log pays one PEXPIRE per eighth of a period and an idle one lives at most period / 8
-- longer than needed. With an explicit time (tests) e stays empty and every admission sets the
-- TTL to at + period - now, in milliseconds, rounded up, plus one (as head.lua describes).
--
-- Costs, per redis.call and per string made: numbers given to redis.call are formatted by Redis
-- with 17 digits (so constants go as strings), each number is formatted once (now, horizon), and
-- the fields carried from the newest member to the new one are copied as they were read.

local SWEEP = 32
local MEMBER = '^(%d+):(%d+):(%d+):([^%z]+)%z?(%d*):?(.*)$'
local clockstamp -- now, with 17 digits, once formatted

if #KEYS == 1 then
  local log = KEYS[1]
  local limit, spelled = string.match(log, ':(%d+):([%d.]+)$', -48)
  limit = tonumber(limit)
  local period = tonumber(spelled) -- Python's repr: it reads back as this very double
  local horizon = now - period
  local total, sum, base, told, oldest, newest, stale, kept, expiry, after
  local top = redis.call('ZRANGE', log, '-1', '-1', 'WITHSCORES')
  if top[1] then
    newest = tonumber(top[2])
    local c, spent, b, o, f, e = string.match(top[1], MEMBER)
    if c and newest > horizon then
      sum, base, told, oldest, kept, expiry = c + spent, tonumber(b), b, o, f, e
      if tonumber(o) <= horizon then
        -- Some entries have left the window: the first one still in it gives b and o.
        after = '(' .. string.format('%.17g', horizon)
        local live = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
          'LIMIT', '0', '1')
        told, oldest, stale = string.match(live[1], '^0*(%d+):'), live[2], true
        base = tonumber(told)
      end
      total = sum - base
    else
      -- Every entry has left the window (or the set is not one of these logs): a fresh log.
      stale = true
    end
  end
  if total == nil or total + cost <= limit then
    if consume then
      local at, stamp, floor = now, nil, '0'
      if total == nil then
        if stale then
          redis.call('DEL', log)
        end
        stamp = string.format('%.17g', now)
        sum, told, oldest, expiry = 0, '0', stamp, ''
      else
        -- Entries stay in the order they were added even if the clock went back.
        if newest > now then
          at, stamp = newest, top[2]
        else
          stamp = string.format('%.17g', now)
        end
        floor = kept
        if kept == '' or (stale and (cost == 0 or base - kept >= SWEEP)) then
          if after == nil then
            after = '(' .. string.format('%.17g', horizon)
          end
          redis.call('ZREMRANGEBYSCORE', log, '-inf', string.sub(after, 2))
          floor = told
        end
      end
      local ttl
      if not clocked then
        expiry, ttl = '', at + period - now
      elseif expiry == '' or at + period > tonumber(expiry) then
        local ends = at + period + period / 8
        expiry, ttl = string.format('%.17g', ends), ends - now
      end
      redis.call('ZADD', log, stamp, string.format('%016d:%d:', sum, cost) .. told .. ':'
        .. oldest .. '\0' .. floor .. ':' .. expiry)
      if ttl then
        redis.call('PEXPIRE', log, string.format('%d', math.ceil(ttl * 1000) + 1))
      end
    end
    local left = limit - cost
    if total ~= nil then
      left = limit - total - cost
    end
    if left < 0 then
      left = 0
    end
    return string.format('%d %s', left, spelled)
  end
  -- The request fits once enough of the oldest entries have left the window: at the time of
  -- the first entry in the window whose c + cost reaches base + need. Every entry frees at
  -- least one unit (unless its cost was 0), so `need` entries usually suffice.
  local need, retry, found, first = total + cost - limit, 0.0, false, 0
  local batch = need
  if batch < 16 then
    batch = 16
  end
  if after == nil then
    after = '(' .. string.format('%.17g', horizon)
  end
  while not found do
    local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
      'LIMIT', first, batch)
    for i = 1, #entries, 2 do
      local c, spent = string.match(entries[i], '^(%d+):(%d+):')
      if c + spent - base >= need then
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
  return string.format('%d %.17g %.17g', left, reset, retry)
end

-- Several rates: the same steps, rate by rate; what commit needs is kept in one table per rate.
local count = #KEYS
local fits, remaining, resets, retries = {false, false}, {0, 0}, {0, 0}, {0, 0}
local views = {false, false}
local allowed = true
for i = 1, count do
  local log = KEYS[i]
  local limit, period = string.match(log, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local horizon = now - period
  local total, sum, base, told, oldest, newest, stale, kept, expiry, after
  local top = redis.call('ZRANGE', log, '-1', '-1', 'WITHSCORES')
  if top[1] then
    newest = tonumber(top[2])
    local c, spent, b, o, f, e = string.match(top[1], MEMBER)
    if c and newest > horizon then
      sum, base, told, oldest, kept, expiry = c + spent, tonumber(b), b, o, f, e
      if tonumber(o) <= horizon then
        after = '(' .. string.format('%.17g', horizon)
        local live = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
          'LIMIT', '0', '1')
        told, oldest, stale = string.match(live[1], '^0*(%d+):'), live[2], true
        base = tonumber(told)
      end
      total = sum - base
    else
      stale = true
    end
  end
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
    if after == nil then
      after = '(' .. string.format('%.17g', horizon)
    end
    while not found do
      local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES',
        'LIMIT', first, batch)
      for j = 1, #entries, 2 do
        local c, spent = string.match(entries[j], '^(%d+):(%d+):')
        if c + spent - base >= need then
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
  if consume then
    views[i] = {total, sum, base, told, oldest, newest, top[2], stale, kept, expiry, after, period}
  end
end

local function commit(i)
  local log, view = KEYS[i], views[i]
  local total, sum, base, told, oldest = view[1], view[2], view[3], view[4], view[5]
  local newest, stale, kept, expiry, period = view[6], view[8], view[9], view[10], view[12]
  local at, stamp, floor = now, nil, '0'
  if total ~= nil and newest > now then
    at, stamp = newest, view[7]
  else
    if clockstamp == nil then
      clockstamp = string.format('%.17g', now)
    end
    stamp = clockstamp
  end
  if total == nil then
    if stale then
      redis.call('DEL', log)
    end
    sum, told, oldest, expiry = 0, '0', stamp, ''
  else
    floor = kept
    if kept == '' or (stale and (cost == 0 or base - kept >= SWEEP)) then
      local after = view[11]
      if after == nil then
        after = '(' .. string.format('%.17g', now - period)
      end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', string.sub(after, 2))
      floor = told
    end
  end
  local ttl
  if not clocked then
    expiry, ttl = '', at + period - now
  elseif expiry == '' or at + period > tonumber(expiry) then
    local ends = at + period + period / 8
    expiry, ttl = string.format('%.17g', ends), ends - now
  end
  redis.call('ZADD', log, stamp, string.format('%016d:%d:', sum, cost) .. told .. ':' .. oldest
    .. '\0' .. floor .. ':' .. expiry)
  if ttl then
    redis.call('PEXPIRE', log, string.format('%d', math.ceil(ttl * 1000) + 1))
  end
end
