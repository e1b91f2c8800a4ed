-- GCRA: one key per rate holding the theoretical arrival time, 8 bytes: a big-endian double
-- (struct.pack('>d'): cheaper to write and read back than a number formatted with 17 digits, and
-- as exact); a value of any other length is no state. Emission interval period/limit, burst
-- limit (_gcra_view and _gcra_take in buttress/ratelimit/_algorithms.py).

if #KEYS == 1 then
  local key = KEYS[1]
  local limit, period = string.match(key, ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local interval = period / limit
  local tat = now
  local raw = redis.call('GET', key)
  if raw and #raw == 8 then
    local stored = struct.unpack('>d', raw)
    if stored > now then
      tat = stored
    end
  end
  local new_tat = tat + cost * interval
  if new_tat - now <= period + EPSILON then
    if consume then
      -- cost * period / limit, not cost * interval: the same rounding as _gcra_take.
      local stored = tat + cost * period / limit
      local ms = math.ceil((stored - now) * 1000)
      if ms > 0 then
        redis.call('SET', key, struct.pack('>d', stored), 'PX', string.format('%d', ms + 1))
      else
        redis.call('DEL', key)
      end
    end
    local remaining = math.floor((now + period - new_tat + EPSILON) / interval)
    local reset = new_tat - now
    if remaining < 0 then
      remaining = 0
    end
    if not (reset > 0.0) then
      reset = 0.0
    end
    return struct.pack('>dd', remaining, reset)
  end
  local remaining = math.floor((now + period - tat + EPSILON) / interval)
  local reset, retry = tat - now, new_tat - period - now
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
local tats = {0, 0}
local allowed = true
for i = 1, count do
  local limit, period = string.match(KEYS[i], ':(%d+):([%d.]+)$', -48)
  limit, period = tonumber(limit), tonumber(period)
  local interval = period / limit
  local tat = now
  local raw = redis.call('GET', KEYS[i])
  if raw and #raw == 8 then
    local stored = struct.unpack('>d', raw)
    if stored > now then
      tat = stored
    end
  end
  local new_tat = tat + cost * interval
  if new_tat - now <= period + EPSILON then
    fits[i], remaining[i], resets[i], retries[i] = true,
      math.floor((now + period - new_tat + EPSILON) / interval), new_tat - now, 0.0
    tats[i] = tat + cost * period / limit
  else
    allowed = false
    fits[i], remaining[i], resets[i], retries[i] = false,
      math.floor((now + period - tat + EPSILON) / interval), tat - now, new_tat - period - now
  end
end

local function commit(i)
  local ms = math.ceil((tats[i] - now) * 1000)
  if ms > 0 then
    redis.call('SET', KEYS[i], struct.pack('>d', tats[i]), 'PX', string.format('%d', ms + 1))
  else
    redis.call('DEL', KEYS[i])
  end
end
