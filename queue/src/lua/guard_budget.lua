-- A GCRA budget (rate per second with a burst). Unlike admission, the caller decides what
-- "over" means: a refusal, or a lower priority.
-- KEYS[1] STRING theoretical arrival time (ms)
-- ARGV[1] rate per second   ARGV[2] burst
-- Returns { 1, 0 } within budget (consumed); { 0, retry_after_ms } over it (nothing consumed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = 1000 / tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
local allowed_ahead = interval * (burst - 1)
if ahead > allowed_ahead then
  return { 0, math.ceil(ahead - allowed_ahead) }
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return { 1, 0 }
