-- Sliding window counter: one key per rate holding the window's index and its count and the
-- previous window's, 24 bytes: three big-endian doubles (struct.pack('>ddd'): cheaper to write
-- and read back than text; whole numbers, exact as doubles up to 2^53); a value of any other
-- length is no state. Windows are aligned to the clock's origin; the last period's count is
-- estimated as previous * (1 - elapsed / period) + current (_counter_view and _counter_take in
-- buttress/ratelimit/_algorithms.py).

if #KEYS == 1 then
  local key = KEYS[1]
  local limit, period = string.match(key, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local index = math.floor(now / period)
  local current, previous, same = 0, 0, false
  local raw = redis.call('GET', key)
  if raw and #raw == 24 then
    local stored, a, b = struct.unpack('>ddd', raw)
    if stored == index then
      current, previous, same = a, b, true
    elseif stored == index - 1 then
      previous = a
    end
  end
  local start = index * period
  local estimate = previous * (1.0 - (now - start) / period) + current
  if estimate + cost <= limit then
    local reset = start + 2 * period - now
    if consume then
      local value = struct.pack('>ddd', index, current + cost, previous)
      if same and clocked then
        redis.call('SET', key, value, 'KEEPTTL') -- the same window: the same expiry
      else
        local ms = math.ceil(((index + 2) * period - now) * 1000)
        if ms > 0 then
          redis.call('SET', key, value, 'PX', string.format('%d', ms + 1))
        else
          redis.call('DEL', key)
        end
      end
    end
    local left = math.floor(limit - estimate - cost)
    if left < 0 then
      left = 0
    end
    if not (reset > 0.0) then
      reset = 0.0
    end
    return struct.pack('>dd', left, reset)
  end
  local retry
  if current + cost <= limit then
    -- Wait until the previous window's share has decayed enough, within this window.
    retry = start + (1.0 - (limit - current - cost) / previous) * period - now
  else
    -- This window's count becomes the previous one; wait until its share decays enough.
    local fraction = 0.0
    if current ~= 0 then
      fraction = 1.0 - (limit - cost) / current
    end
    if 0.0 > fraction then
      fraction = 0.0
    end
    retry = start + period + fraction * period - now
  end
  -- Rejected, so something was counted: this window's hits weigh until the end of the next.
  local windows = 1.0
  if current ~= 0 then
    windows = 2.0
  end
  local reset = start + windows * period - now
  local left = math.floor(limit - estimate)
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

local count = #KEYS
local fits, remaining, resets, retries = {false, false}, {0, 0}, {0, 0}, {0, 0}
local values, expiries, same = {0, 0}, {0, 0}, {false, false}
local allowed = true
for i = 1, count do
  local limit, period = string.match(KEYS[i], ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local index = math.floor(now / period)
  local current, previous = 0, 0
  local raw = redis.call('GET', KEYS[i])
  if raw and #raw == 24 then
    local stored, a, b = struct.unpack('>ddd', raw)
    if stored == index then
      current, previous, same[i] = a, b, true
    elseif stored == index - 1 then
      previous = a
    end
  end
  local start = index * period
  local estimate = previous * (1.0 - (now - start) / period) + current
  if estimate + cost <= limit then
    fits[i], remaining[i], resets[i], retries[i] =
      true, math.floor(limit - estimate - cost), start + 2 * period - now, 0.0
    values[i] = struct.pack('>ddd', index, current + cost, previous)
    expiries[i] = (index + 2) * period
  else
    allowed = false
    local retry
    if current + cost <= limit then
      retry = start + (1.0 - (limit - current - cost) / previous) * period - now
    else
      local fraction = 0.0
      if current ~= 0 then
        fraction = 1.0 - (limit - cost) / current
      end
      if 0.0 > fraction then
        fraction = 0.0
      end
      retry = start + period + fraction * period - now
    end
    local windows = 1.0
    if current ~= 0 then
      windows = 2.0
    end
    local left = math.floor(limit - estimate)
    if left < 0 then
      left = 0
    end
    if not (retry > 0.0) then
      retry = 0.0
    end
    fits[i], remaining[i], resets[i], retries[i] =
      false, left, start + windows * period - now, retry
  end
end

local function commit(i)
  if same[i] and clocked then
    redis.call('SET', KEYS[i], values[i], 'KEEPTTL')
    return
  end
  local ms = math.ceil((expiries[i] - now) * 1000)
  if ms > 0 then
    redis.call('SET', KEYS[i], values[i], 'PX', string.format('%d', ms + 1))
  else
    redis.call('DEL', KEYS[i])
  end
end
