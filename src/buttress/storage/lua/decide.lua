-- The decision driver shared by every algorithm. RedisStorage builds each decision script as
-- common.lua + <algorithm>.lua + this file; the algorithm part defines KEYS_PER_RATE and
-- load(rate, now), view(rate, now, cost) and take(rate, now, cost).
--
-- KEYS: KEYS_PER_RATE keys per rate, in the order of the rates (all with one hash tag).
-- ARGV: now ('' for the server's clock), cost, consume ('1' or '0'), then limit and period of
--       each rate.
-- Returns "<allowed (1 or 0)> <the binding rate's index, from 1> <remaining> <reset_after>
--          <retry_after>", one string (times with 17 significant digits: exact).
--
-- All or nothing, as decide() in _algorithms.py: every rate is viewed first; only when all of
-- them admit the request (and consume is set) does any state change.

local now = clock()
local cost = tonumber(ARGV[2])
local consume = ARGV[3] == '1'
local count = (#ARGV - 3) / 2

local rates = {}
local allowed = true
for i = 1, count do
  local keys = {}
  for j = 1, KEYS_PER_RATE do
    keys[j] = KEYS[(i - 1) * KEYS_PER_RATE + j]
  end
  local rate = {limit = tonumber(ARGV[2 + 2 * i]), period = tonumber(ARGV[3 + 2 * i]), keys = keys}
  load(rate, now)
  rate.fits, rate.remaining, rate.reset, rate.retry = view(rate, now, cost)
  if not rate.fits then
    allowed = false
  end
  rates[i] = rate
end

local binding
if allowed then
  if consume then
    for i = 1, count do
      take(rates[i], now, cost)
    end
  end
  -- The least remaining, then the latest reset; the first such rate on a tie.
  binding = 1
  for i = 2, count do
    local rate, best = rates[i], rates[binding]
    if rate.remaining < best.remaining
        or (rate.remaining == best.remaining and -rate.reset < -best.reset) then
      binding = i
    end
  end
else
  -- The rejecting rate with the latest retry; the first such rate on a tie.
  for i = 1, count do
    local rate = rates[i]
    if not rate.fits and (binding == nil or rate.retry > rates[binding].retry) then
      binding = i
    end
  end
end

local chosen = rates[binding]
local verdict = 0
if allowed then
  verdict = 1
end
-- One string: cheaper to build here and to read in Python than a five-element array.
return string.format('%d %d %d %.17g %.17g', verdict, binding, pymax(0, chosen.remaining),
  pymax(0.0, chosen.reset), pymax(0.0, chosen.retry))
