-- Fixed window: one key per rate holding "count window_end". The window starts at the first hit
-- and lasts one period (_fixed_view and _fixed_take in buttress/ratelimit/_algorithms.py).

local KEYS_PER_RATE = 1

local function load(rate, now)
  rate.state = numbers(redis.call('GET', rate.keys[1]))
end

local function window(rate, now)
  local state = rate.state
  if state and now < state[2] then
    return state[1], state[2]
  end
  return 0.0, now + rate.period
end

local function view(rate, now, cost)
  local count, stop = window(rate, now)
  local limit = rate.limit
  if count + cost <= limit then
    return true, trunc(limit - count - cost), stop - now, 0.0
  end
  return false, trunc(limit - count), stop - now, stop - now
end

local function take(rate, now, cost)
  local count, stop = window(rate, now)
  put(rate.keys[1], num(count + cost) .. ' ' .. num(stop), stop, now)
end
