-- Fixed window: one key per rate holding "<count> <window_end>". The window starts at the first
-- hit and lasts one period (_fixed_view and _fixed_take in buttress/ratelimit/_algorithms.py).
-- Counts are sums of whole costs: written with %d, they stay exact; the window's end is written
-- once, when the window opens, and copied as it is afterwards.

if #KEYS == 1 then
  local key = KEYS[1]
  local limit, period = string.match(key, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local used, stop, ends = 0, nil, nil
  local raw = redis.call('GET', key)
  if raw then
    local space = string.find(raw, ' ', 1, true)
    ends = string.sub(raw, space + 1)
    stop = tonumber(ends)
    if now < stop then
      used = tonumber(string.sub(raw, 1, space - 1))
    else
      stop = nil
    end
  end
  if not stop then
    stop, ends = now + period, nil
  end
  -- Positive: now < stop, or a fresh window (a period is at least a millisecond).
  local reset = stop - now
  if used + cost <= limit then
    if consume then
      if not ends then
        redis.call('SET', key, string.format('%d %.17g', used + cost, stop),
          'PX', string.format('%d', math.ceil(reset * 1000) + 1))
      elseif clocked then
        -- The same window, on the server's clock: the key already expires when it ends.
        redis.call('SET', key, string.format('%d %s', used + cost, ends), 'KEEPTTL')
      else
        redis.call('SET', key, string.format('%d %s', used + cost, ends),
          'PX', string.format('%d', math.ceil(reset * 1000) + 1))
      end
    end
    return struct.pack('>dd', limit - used - cost, reset)
  end
  return struct.pack('>ddd', limit - used, reset, reset)
end

local count = #KEYS
local fits, remaining, resets, retries = {false, false}, {0, 0}, {0, 0}, {0, 0}
local used, stops, ends = {0, 0}, {0, 0}, {false, false}
local allowed = true
for i = 1, count do
  local limit, period = string.match(KEYS[i], ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local spent, stop, kept = 0, nil, false -- kept: the end of a window still open, as stored
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local space = string.find(raw, ' ', 1, true)
    kept = string.sub(raw, space + 1)
    stop = tonumber(kept)
    if now < stop then
      spent = tonumber(string.sub(raw, 1, space - 1))
    else
      stop, kept = nil, false
    end
  end
  if not stop then
    stop = now + period
  end
  used[i], stops[i], ends[i], resets[i] = spent, stop, kept, stop - now
  if spent + cost <= limit then
    fits[i], remaining[i], retries[i] = true, limit - spent - cost, 0.0
  else
    fits[i], remaining[i], retries[i] = false, limit - spent, stop - now
    allowed = false
  end
end

local function commit(i)
  local kept = ends[i]
  if not kept then
    redis.call('SET', KEYS[i], string.format('%d %.17g', used[i] + cost, stops[i]),
      'PX', string.format('%d', math.ceil(resets[i] * 1000) + 1))
  elseif clocked then
    redis.call('SET', KEYS[i], string.format('%d %s', used[i] + cost, kept), 'KEEPTTL')
  else
    redis.call('SET', KEYS[i], string.format('%d %s', used[i] + cost, kept),
      'PX', string.format('%d', math.ceil(resets[i] * 1000) + 1))
  end
end
