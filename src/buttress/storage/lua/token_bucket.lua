-- Token bucket: one key per rate holding "tokens updated"; a bucket of `limit` tokens refilled
-- at limit/period per second (_bucket_view and _bucket_take in buttress/ratelimit/_algorithms.py).

local KEYS_PER_RATE = 1

local function load(rate, now)
  rate.state = numbers(redis.call('GET', rate.keys[1]))
end

local function tokens(rate, now)
  local limit, state = rate.limit, rate.state
  local available = limit
  if state then
    local refill = (now - state[2]) * limit / rate.period
    if not (refill > 0.0) then
      refill = 0.0
    end
    available = pymin(available, state[1] + refill)
  end
  return available
end

local function view(rate, now, cost)
  local limit = rate.limit
  local per_token = rate.period / limit
  local available = tokens(rate, now)
  local slack = EPSILON / per_token
  if available + slack >= cost then
    local left = 0.0
    if available > cost then
      left = available - cost
    end
    return true, math.floor(left + slack), (limit - left) * per_token, 0.0
  end
  return false, math.floor(available + slack), (limit - available) * per_token,
    (cost - available) * per_token
end

local function take(rate, now, cost)
  local available = tokens(rate, now)
  local left = 0.0
  if available > cost then
    left = available - cost
  end
  local expires = now + (rate.limit - left) * rate.period / rate.limit
  put(rate.keys[1], num(left) .. ' ' .. num(now), expires, now)
end
