-- Forget a limiter key's state under some rates: KEYS are every state key of those rates.
return redis.call('DEL', unpack(KEYS))
