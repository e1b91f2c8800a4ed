-- The end of every decision script, for several rates: the algorithm part has viewed every
-- rate (fits, remaining, resets, retries: one entry per rate) and defined commit(i). All or
-- nothing, as decide() in _algorithms.py: only when every rate admits the request (and it is
-- not a peek) does any state change.

local binding
if allowed then
  if consume then
    for i = 1, count do
      commit(i)
    end
  end
  -- The least remaining, then the latest reset; the first such rate on a tie.
  binding = 1
  for i = 2, count do
    if remaining[i] < remaining[binding]
        or (remaining[i] == remaining[binding] and -resets[i] < -resets[binding]) then
      binding = i
    end
  end
else
  -- The rejecting rate with the latest retry; the first such rate on a tie.
  for i = 1, count do
    if not fits[i] and (binding == nil or retries[i] > retries[binding]) then
      binding = i
    end
  end
end

local left, reset = remaining[binding], resets[binding]
if left < 0 then
  left = 0
end
if not (reset > 0.0) then
  reset = 0.0
end
if allowed then
  return struct.pack('>ddd', binding, left, reset)
end
local retry = retries[binding]
if not (retry > 0.0) then
  retry = 0.0
end
return struct.pack('>dddd', binding, left, reset, retry)
