-- The shared state of one circuit breaker: every operation reads it, applies the breaker's rules
-- on the server's clock and writes it back, atomically. RedisStorage puts common.lua in front.
-- The rules are those of buttress/breaker/_machine.py (the in-process reference).
--
-- KEYS[1]  the state (hash): st (c closed, o open, h half-open, f forced open, d disabled), gen
--          (changes with every transition), until (end of the open period), trips (in a row),
--          cons (failures in a row), hs (trial successes), and for a count window pos, n, nf, ns
--          (next slot, calls, failures, slow calls).
-- KEYS[2]  the window: for a count window a string of one byte per call, used as a ring
--          (s success, f failure, S slow success, F slow failure); for a time window a hash of
--          buckets (e<i> the bucket's number, c<i> calls, f<i> failures, s<i> slow calls).
-- KEYS[3]  the trial permits of HALF_OPEN (sorted set: member the permit, score its expiry).
--
-- ARGV[1] now ('' for the server's clock), ARGV[2] the operation, ARGV[3..15] the rules:
-- fail_max (0: none), failure_rate (0: none), slow_rate (0: none), window type (count | time),
-- window size (calls | seconds), buckets, min_calls, reset_timeout, multiplier, the cap on the
-- open period, half_open_max_calls, success_threshold, the seconds the keys are kept idle.
--
-- Operations (their arguments from ARGV[16]):
--   sync   gen, successes, failures, slow successes, slow failures, failures since the last
--          success (trailing), whether the batch had a success ('1'/'0'): record outcomes
--          counted by a process (dropped when gen is not the current generation) and answer
--          the state.
--   trial  permit id, lease seconds: start HALF_OPEN when the open period is over, and take a
--          trial permit if one is free.
--   done   gen, permit id, outcome (s, f, or i for ignored): a trial call ended. A permit that
--          lapsed meanwhile counts nothing.
--   force  target state (o, c, h, f, d): manual control.
--   read   nothing: answer the state.
--
-- Reply: { st, gen, seconds left open, granted (1 a trial permit, 2 a plain call, 0 refused),
--          calls, failures, slow, cons, reason of a transition ('' if none), seconds until the
--          first trial permit lapses (when refused in HALF_OPEN) }

local now = clock()
local state_key, window_key, trials_key = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[2]
local fail_max = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local slow_rate = tonumber(ARGV[5])
local count_window = ARGV[6] == 'count'
local size = tonumber(ARGV[7])
local buckets = tonumber(ARGV[8])
local min_calls = tonumber(ARGV[9])
local reset_timeout = tonumber(ARGV[10])
local multiplier = tonumber(ARGV[11])
local timeout_max = tonumber(ARGV[12])
local half_open_max = tonumber(ARGV[13])
local success_threshold = tonumber(ARGV[14])
local keep_ms = string.format('%d', math.ceil(tonumber(ARGV[15]) * 1000))
local windowed = failure_rate > 0 or slow_rate > 0

local h = redis.call('HMGET', state_key, 'st', 'gen', 'until', 'trips', 'cons', 'hs', 'pos', 'n',
  'nf', 'ns')
local st = h[1] or 'c'
local gen = tonumber(h[2] or '0')
local open_until = tonumber(h[3] or '0')
local trips = tonumber(h[4] or '0')
local cons = tonumber(h[5] or '0')
local hs = tonumber(h[6] or '0')
local pos, n, nf, ns = tonumber(h[7] or '0'), tonumber(h[8] or '0'), tonumber(h[9] or '0'),
  tonumber(h[10] or '0')
local dirty, reason, granted, wait = false, '', 0, 0

-- The window ---------------------------------------------------------------------------------

local function clear_window()
  redis.call('DEL', window_key)
  pos, n, nf, ns = 0, 0, 0, 0
end

local function matches(text, pattern)
  local _, found = string.gsub(text, pattern, '')
  return found
end

-- Write a run of outcomes over the ring from slot `at`, taking the overwritten calls out.
local function overwrite(at, run)
  local old = redis.call('GETRANGE', window_key, at, at + #run - 1)
  n = n - matches(old, '[sfSF]') + #run
  nf = nf - matches(old, '[fF]') + matches(run, '[fF]')
  ns = ns - matches(old, '[SF]') + matches(run, '[SF]')
  redis.call('SETRANGE', window_key, at, run)
end

-- Python's float floor division (now // width), exactly, so that both agree on bucket edges.
local function floordiv(a, b)
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and (b < 0) ~= (mod < 0) then
    div = div - 1
  end
  local whole = math.floor(div)
  if div - whole > 0.5 then
    whole = whole + 1
  end
  return whole
end

local width = size / buckets
local current = floordiv(now, width)

local function record(s, f, ss, sf)
  if count_window then
    -- Slow ones first, failures last: the batch's failures in a row end it.
    local run = string.rep('S', ss) .. string.rep('s', s) .. string.rep('F', sf) .. string.rep('f', f)
    if #run > size then
      run = string.sub(run, -size)
    end
    local first = math.min(#run, size - pos)
    overwrite(pos, string.sub(run, 1, first))
    if first < #run then
      overwrite(0, string.sub(run, first + 1))
    end
    pos = (pos + #run) % size
  else
    local slot = current % buckets
    local e, c, fk, sk = 'e' .. slot, 'c' .. slot, 'f' .. slot, 's' .. slot
    if tonumber(redis.call('HGET', window_key, e) or '-1') ~= current then
      redis.call('HSET', window_key, e, current, c, 0, fk, 0, sk, 0)
    end
    redis.call('HINCRBY', window_key, c, s + f + ss + sf)
    redis.call('HINCRBY', window_key, fk, f + sf)
    redis.call('HINCRBY', window_key, sk, ss + sf)
  end
  redis.call('PEXPIRE', window_key, keep_ms)
end

local function totals()
  if count_window then
    return n, nf, ns
  end
  local calls, failures, slow = 0, 0, 0
  local fields = redis.call('HGETALL', window_key)
  local values = {}
  for i = 1, #fields, 2 do
    values[fields[i]] = tonumber(fields[i + 1])
  end
  for slot = 0, buckets - 1 do
    local id = values['e' .. slot]
    if id and current - id < buckets then
      calls = calls + values['c' .. slot]
      failures = failures + values['f' .. slot]
      slow = slow + values['s' .. slot]
    end
  end
  return calls, failures, slow
end

-- Transitions --------------------------------------------------------------------------------

local function move(new, why)
  st, gen, hs, reason, dirty = new, gen + 1, 0, why, true
  redis.call('DEL', trials_key)
end

local function trip(why)
  trips = trips + 1
  local period = math.min(reset_timeout * multiplier ^ (trips - 1), timeout_max)
  open_until = now + period
  cons = 0
  clear_window()
  move('o', why)
end

local function close(why)
  trips, cons, open_until = 0, 0, 0
  clear_window()
  move('c', why)
end

local function judge()
  if fail_max > 0 and cons >= fail_max then
    return trip(string.format('%d failures in a row', cons))
  end
  if not windowed then
    return
  end
  local calls, failures, slow = totals()
  if calls < min_calls then
    return
  end
  if failure_rate > 0 and failures >= failure_rate * calls then
    return trip(string.format('failure rate %.0f%% >= %.0f%% over %d calls',
      failures / calls * 100, failure_rate * 100, calls))
  end
  if slow_rate > 0 and slow >= slow_rate * calls then
    return trip(string.format('slow-call rate %.0f%% >= %.0f%% over %d calls',
      slow / calls * 100, slow_rate * 100, calls))
  end
end

-- Operations ---------------------------------------------------------------------------------

if op == 'sync' then
  local s, f = tonumber(ARGV[17]), tonumber(ARGV[18])
  local ss, sf = tonumber(ARGV[19]), tonumber(ARGV[20])
  if tonumber(ARGV[16]) == gen and (st == 'c' or st == 'd') and s + f + ss + sf > 0 then
    dirty = true
    if windowed or st == 'd' then
      record(s, f, ss, sf)
    end
    if st == 'c' then
      if ARGV[22] == '1' then
        cons = tonumber(ARGV[21])
      else
        cons = cons + f + sf
      end
      judge()
    end
  end
elseif op == 'trial' then
  if st == 'o' and now >= open_until then
    move('h', 'the reset timeout passed')
  end
  if st == 'h' then
    redis.call('ZREMRANGEBYSCORE', trials_key, '-inf', num(now))
    if redis.call('ZCARD', trials_key) < half_open_max then
      redis.call('ZADD', trials_key, num(now + tonumber(ARGV[17])), ARGV[16])
      expire_leases(trials_key, now)
      granted = 1
    else
      local first = redis.call('ZRANGE', trials_key, 0, 0, 'WITHSCORES')
      wait = tonumber(first[2]) - now
    end
  elseif st == 'c' or st == 'd' then
    granted = 2
  end
elseif op == 'done' then
  redis.call('ZREMRANGEBYSCORE', trials_key, '-inf', num(now))  -- a lapsed permit counts nothing
  local held = redis.call('ZREM', trials_key, ARGV[17]) == 1
  if held and st == 'h' and tonumber(ARGV[16]) == gen then
    local outcome = ARGV[18]
    if outcome == 'f' then
      trip('a trial call failed')
    elseif outcome == 's' then
      hs, dirty = hs + 1, true
      if hs >= success_threshold then
        close(string.format('%d trial call(s) succeeded', hs))
      end
    end
  end
elseif op == 'force' then
  local target = ARGV[16]
  if target == 'o' then
    trip('opened by hand')
  elseif target == 'c' then
    if st == 'c' then
      clear_window()
      cons, trips, dirty = 0, 0, true
    else
      close('closed by hand')
    end
  elseif target == 'h' then
    move('h', 'half-opened by hand')
  elseif target == 'f' and st ~= 'f' then
    move('f', 'forced open by hand')
  elseif target == 'd' and st ~= 'd' then
    clear_window()
    move('d', 'disabled by hand')
  end
elseif op ~= 'read' then
  return redis.error_reply('unknown breaker operation ' .. op)
end

if dirty then
  redis.call('HSET', state_key, 'st', st, 'gen', gen, 'until', num(open_until), 'trips', trips,
    'cons', cons, 'hs', hs, 'pos', pos, 'n', n, 'nf', nf, 'ns', ns)
  redis.call('PEXPIRE', state_key, keep_ms)
end
local calls, failures, slow = 0, 0, 0
if windowed or st == 'd' then
  calls, failures, slow = totals()
end
local left = 0
if st == 'o' then
  left = open_until - now
end
return { st, gen, num(left), granted, calls, failures, slow, cons, reason, num(wait) }
