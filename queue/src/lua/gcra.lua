-- GCRA (generic cell rate algorithm), shared by the scripts that rate-limit: prepended to them
-- by `conn.rs`. Reads the clock from Redis (`TIME`), so process clocks do not matter.
-- gcra_check(key, rate_per_second, burst) -> allowed, retry_after_ms, commit
--   allowed: whether one more request fits; retry_after_ms: when it would (if not);
--   commit(): records the request (call it only once every other check has passed).
local function gcra_check(key, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local interval = 1000 / tonumber(rate)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local ahead = tat - now
  local allowed_ahead = interval * (tonumber(burst) - 1)
  local commit = function()
    redis.call('SET', key, tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
  end
  if ahead > allowed_ahead then
    return false, math.ceil(ahead - allowed_ahead), commit
  end
  return true, 0, commit
end
