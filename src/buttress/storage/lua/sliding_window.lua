-- Sliding window log: one sorted set per rate, an entry per admitted request, score its time
-- (_log_view and _log_take in buttress/ratelimit/_algorithms.py). An entry's member is seven
-- doubles, packed big-endian (struct.pack(ENTRY, ...), 56 bytes):
--   c  the sum of the costs admitted into this log before this entry;
--   t  the entry's time (its score: read from the member, replies need no WITHSCORES);
--   n  its cost;
--   b  the sum before the oldest entry in the window when this one was added, o its time;
--   f  the sum before the oldest entry still in the set (f <= b: the entries from f up to b
--      have left the window but are not removed yet);
--   e  the time, on the server's clock, until which the key lives; -1 with an explicit time.
-- The newest entry (the last one) thus gives the sum of the costs in the window, c + n - b,
-- without reading the log: a decision reads one entry and writes one, O(log N). Entries of the
-- same time sort by member, i.e. in the order they were added (c comes first, and the big-endian
-- bytes of a non-negative double sort as its value; c never decreases, and grows past an entry
-- of cost 0 only with the next one); two requests of cost 0 in a row may make one entry, which
-- changes no answer. A member of any other length is not one of these logs: a fresh log.
--
-- Entries at or before now - period have left the window; peeks and rejections only read. An
-- admission that finds entries newly out of the window reads the first one still in it (for b
-- and o), but removes the stale ones only once their costs add up to SWEEP (or when the request
-- costs 0). A limiter's requests cost at least 1, so at most SWEEP - 1 stale entries remain
-- after an admission (with requests of cost 0, at most as many as were in the window). Stale
-- entries come before the window (times only grow along the log), where no read looks but the
-- retry search, in which they free nothing (their c + n <= b). A log whose entries have all left
-- the window is a fresh log (as the memory store's empty log, but for a cost above the limit,
-- which a limiter never sends): it is deleted and begun again.
--
-- Expiry: on the server's clock an admission at `at` needs the key to live until at + period;
-- it gets at + period + period / 8 (kept as e), refreshed only once at + period passes e, so a
-- busy log pays one PEXPIRE per eighth of a period and an idle one lives at most period / 8
-- longer than needed. With an explicit time (tests) every admission sets the TTL to
-- at + period - now, in milliseconds, rounded up, plus one (as head.lua describes).
--
-- Costs, per redis.call and per string made (Redis 7.0, µs of server time): a reply's score
-- costs about 0.45 (Redis formats it with 17 digits), so no read asks WITHSCORES; packing and
-- unpacking the seven doubles about 0.1 to 0.2, against 0.5 for parsing them from text. Numbers
-- given to redis.call are formatted by Redis with 17 digits, so constants go as strings and the
-- one number every decision needs as a string, its time, is formatted once.
--
-- The previous layout (text members, keys '...:swl:...') is not read: the key names differ
-- ('...:swlog:...'), so during a rolling upgrade old and new clients keep separate logs.

local SWEEP = 32
local ENTRY = '>ddddddd'
local HEAD = '>ddd' -- c, t and n: all that the first live entry and the retry search need
local clockstamp -- now, with 17 digits, once formatted

if #KEYS == 1 then
  local log = KEYS[1]
  local limit, spelled = string.match(log, ':(%d+):([%d.]+)$', -48)
  limit = tonumber(limit)
  local period = tonumber(spelled) -- Python's repr: it reads back as this very double
  local horizon = now - period
  local total, sum, base, oldest, newest, stale, kept, expiry, after
  local top = redis.call('ZRANGE', log, '-1', '-1')[1]
  if top then
    if #top == 56 then
      local c, t, spent, b, o, f, e = struct.unpack(ENTRY, top)
      if t > horizon then
        newest, sum, base, oldest, kept, expiry = t, c + spent, b, o, f, e
        if o <= horizon then
          -- Some entries have left the window: the first one still in it gives b and o.
          after = '(' .. string.format('%.17g', horizon)
          local live = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'LIMIT', '0', '1')
          base, oldest = struct.unpack(HEAD, live[1])
          stale = true
        end
        total = sum - base
      else
        stale = true -- every entry has left the window: a fresh log
      end
    else
      stale = true -- not one of these logs
    end
  end
  if total == nil or total + cost <= limit then
    if consume then
      local at, floor = now, 0
      if total == nil then
        if stale then
          redis.call('DEL', log)
        end
        sum, base, oldest, expiry = 0, 0, now, -1
      else
        -- Entries stay in the order they were added even if the clock went back.
        if newest > now then
          at = newest
        end
        floor = kept
        if stale and (cost == 0 or base - kept >= SWEEP) then
          if after == nil then
            after = '(' .. string.format('%.17g', horizon)
          end
          redis.call('ZREMRANGEBYSCORE', log, '-inf', string.sub(after, 2))
          floor = base
        end
      end
      local ttl
      if not clocked then
        expiry, ttl = -1, at + period - now
      elseif expiry < 0 or at + period > expiry then
        expiry = at + period + period / 8
        ttl = expiry - now
      end
      local stamp = ARGV[2]
      if clocked or at ~= now then
        stamp = string.format('%.17g', at)
      end
      redis.call('ZADD', log, stamp, struct.pack(ENTRY, sum, at, cost, base, oldest, floor, expiry))
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
    return struct.pack('>dd', left, period)
  end
  -- The request fits once enough of the oldest entries have left the window: at the time of
  -- the first entry in the window whose c + n reaches base + need. Every entry frees at least
  -- one unit (unless its cost was 0), so `need` entries usually suffice.
  local need, retry, found, first = total + cost - limit, 0.0, false, 0
  local batch = need
  if batch < 16 then
    batch = 16
  end
  if after == nil then
    after = '(' .. string.format('%.17g', horizon)
  end
  while not found do
    local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'LIMIT', first, batch)
    for i = 1, #entries do
      local c, t, spent = struct.unpack(HEAD, entries[i])
      if c + spent - base >= need then
        retry = t + period - now
        found = true
        break
      end
    end
    if #entries < batch then
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
  local total, sum, base, oldest, newest, stale, kept, expiry, after
  local top = redis.call('ZRANGE', log, '-1', '-1')[1]
  if top then
    if #top == 56 then
      local c, t, spent, b, o, f, e = struct.unpack(ENTRY, top)
      if t > horizon then
        newest, sum, base, oldest, kept, expiry = t, c + spent, b, o, f, e
        if o <= horizon then
          after = '(' .. string.format('%.17g', horizon)
          local live = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'LIMIT', '0', '1')
          base, oldest = struct.unpack(HEAD, live[1])
          stale = true
        end
        total = sum - base
      else
        stale = true
      end
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
      local entries = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'LIMIT', first, batch)
      for j = 1, #entries do
        local c, t, spent = struct.unpack(HEAD, entries[j])
        if c + spent - base >= need then
          retry = t + period - now
          found = true
          break
        end
      end
      if #entries < batch then
        break
      end
      first = first + batch
    end
    fits[i], remaining[i], resets[i], retries[i] = false, limit - total, newest + period - now,
      retry
  end
  if consume then
    views[i] = {total, sum, base, oldest, newest, stale, kept, expiry, after, period}
  end
end

local function commit(i)
  local log, view = KEYS[i], views[i]
  local total, sum, base, oldest, newest = view[1], view[2], view[3], view[4], view[5]
  local stale, kept, expiry, period = view[6], view[7], view[8], view[10]
  local at, floor = now, 0
  if total ~= nil and newest > now then
    at = newest
  end
  if total == nil then
    if stale then
      redis.call('DEL', log)
    end
    sum, base, oldest, expiry = 0, 0, now, -1
  else
    floor = kept
    if stale and (cost == 0 or base - kept >= SWEEP) then
      local after = view[9]
      if after == nil then
        after = '(' .. string.format('%.17g', now - period)
      end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', string.sub(after, 2))
      floor = base
    end
  end
  local ttl
  if not clocked then
    expiry, ttl = -1, at + period - now
  elseif expiry < 0 or at + period > expiry then
    expiry = at + period + period / 8
    ttl = expiry - now
  end
  local stamp
  if at ~= now then
    stamp = string.format('%.17g', at)
  elseif not clocked then
    stamp = ARGV[2]
  else
    if clockstamp == nil then
      clockstamp = string.format('%.17g', now)
    end
    stamp = clockstamp
  end
  redis.call('ZADD', log, stamp, struct.pack(ENTRY, sum, at, cost, base, oldest, floor, expiry))
  if ttl then
    redis.call('PEXPIRE', log, string.format('%d', math.ceil(ttl * 1000) + 1))
  end
end
