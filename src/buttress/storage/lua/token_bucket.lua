-- Token bucket: one key per rate holding the tokens and when they were counted, 16 bytes: two
-- big-endian doubles (struct.pack('>dd'): cheaper to write and read back than numbers formatted
-- with 17 digits, and as exact); a value of any other length is no state (a full bucket). A
-- bucket of `limit` tokens refilled at limit/period per second (_bucket_view and _bucket_take in
-- buttress/ratelimit/_algorithms.py).

if #KEYS == 1 then
  local key = KEYS[1]
  local limit, period = string.match(key, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local per_token = period / limit
  local tokens = limit
  local raw = redis.call('GET', key)
  if raw and #raw == 16 then
    local stored, updated = struct.unpack('>dd', raw)
    local refill = (now - updated) * limit / period
    if not (refill > 0.0) then
      refill = 0.0
    end
    local level = stored + refill
    if level < tokens then
      tokens = level
    end
  end
  local slack = EPSILON / per_token -- the tokens one microsecond brings: absorbs float noise
  if tokens + slack >= cost then
    local left = 0.0
    if tokens > cost then
      left = tokens - cost
    end
    if consume then
      local ms = math.ceil((now + (limit - left) * period / limit - now) * 1000)
      if ms > 0 then
        redis.call('SET', key, struct.pack('>dd', left, now), 'PX', string.format('%d', ms + 1))
      else
        redis.call('DEL', key)
      end
    end
    local remaining, reset = math.floor(left + slack), (limit - left) * per_token
    if remaining < 0 then
      remaining = 0
    end
    if not (reset > 0.0) then
      reset = 0.0
    end
    return struct.pack('>dd', remaining, reset)
  end
  local remaining, reset = math.floor(tokens + slack), (limit - tokens) * per_token
  local retry = (cost - tokens) * per_token
  if remaining < 0 then
    remaining = 0
  end
  if not (reset > 0.0) then
    reset = 0.0
  end
  if not (retry > 0.0) then
    retry = 0.0
  end
  return struct.pack('>ddd', remaining, reset, retry)
end

local count = #KEYS
local fits, remaining, resets, retries = {false, false}, {0, 0}, {0, 0}, {0, 0}
local lefts, expiries = {0, 0}, {0, 0}
local allowed = true
for i = 1, count do
  local limit, period = string.match(KEYS[i], ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local per_token = period / limit
  local tokens = limit
  local raw = redis.call('GET', KEYS[i])
  if raw and #raw == 16 then
    local stored, updated = struct.unpack('>dd', raw)
    local refill = (now - updated) * limit / period
    if not (refill > 0.0) then
      refill = 0.0
    end
    local level = stored + refill
    if level < tokens then
      tokens = level
    end
  end
  local slack = EPSILON / per_token
  if tokens + slack >= cost then
    local left = 0.0
    if tokens > cost then
      left = tokens - cost
    end
    fits[i], remaining[i], resets[i], retries[i] =
      true, math.floor(left + slack), (limit - left) * per_token, 0.0
    lefts[i], expiries[i] = left, now + (limit - left) * period / limit
  else
    allowed = false
    fits[i], remaining[i], resets[i], retries[i] = false, math.floor(tokens + slack),
      (limit - tokens) * per_token, (cost - tokens) * per_token
  end
end

local function commit(i)
  local ms = math.ceil((expiries[i] - now) * 1000)
  if ms > 0 then
    redis.call('SET', KEYS[i], struct.pack('>dd', lefts[i], now), 'PX', string.format('%d', ms + 1))
  else
    redis.call('DEL', KEYS[i])
  end
end
