-- Sliding window counter: one key per rate holding "window_index current previous", windows
-- aligned to the clock's origin; the last period's count is estimated as
-- previous * (1 - elapsed / period) + current (_counter_view and _counter_take in
-- buttress/ratelimit/_algorithms.py).

local KEYS_PER_RATE = 1

local function load(rate, now)
  rate.state = numbers(redis.call('GET', rate.keys[1]))
end

local function roll(rate, now)
  local index = math.floor(now / rate.period)
  local state = rate.state
  if state then
    if state[1] == index then
      return index, state[2], state[3]
    end
    if state[1] == index - 1 then
      return index, 0.0, state[2]
    end
  end
  return index, 0.0, 0.0
end

local function view(rate, now, cost)
  local period, limit = rate.period, rate.limit
  local index, current, previous = roll(rate, now)
  local start = index * period
  local estimate = previous * (1.0 - (now - start) / period) + current
  if estimate + cost <= limit then
    return true, math.floor(limit - estimate - cost), start + 2 * period - now, 0.0
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
    retry = start + period + pymax(fraction, 0.0) * period - now
  end
  -- Rejected, so something was counted: this window's hits weigh until the end of the next.
  local windows = 1.0
  if current ~= 0 then
    windows = 2.0
  end
  local reset = start + windows * period - now
  return false, pymax(0, math.floor(limit - estimate)), reset, pymax(retry, 0.0)
end

local function take(rate, now, cost)
  local index, current, previous = roll(rate, now)
  local value = num(index) .. ' ' .. num(current + cost) .. ' ' .. num(previous)
  put(rate.keys[1], value, (index + 2) * rate.period, now)
end
