-- GCRA: one key per rate holding the theoretical arrival time; emission interval period/limit,
-- burst limit (_gcra_view and _gcra_take in buttress/ratelimit/_algorithms.py).

local KEYS_PER_RATE = 1

local function load(rate, now)
  rate.state = numbers(redis.call('GET', rate.keys[1]))
end

local function arrival(rate, now)
  if rate.state and rate.state[1] > now then
    return rate.state[1]
  end
  return now
end

local function view(rate, now, cost)
  local period = rate.period
  local interval = period / rate.limit
  local tat = arrival(rate, now)
  local new_tat = tat + cost * interval
  if new_tat - now <= period + EPSILON then
    return true, math.floor((now + period - new_tat + EPSILON) / interval), new_tat - now, 0.0
  end
  local remaining = math.floor((now + period - tat + EPSILON) / interval)
  return false, remaining, tat - now, new_tat - period - now
end

local function take(rate, now, cost)
  -- cost * period / limit, not cost * interval: the same rounding as _gcra_take.
  local tat = arrival(rate, now) + cost * rate.period / rate.limit
  put(rate.keys[1], num(tat), tat, now)
end
