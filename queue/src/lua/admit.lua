-- Admission at ingest for one tenant: a GCRA rate limit (rate per second with a burst) and a
-- daily quota, decided atomically. Nothing is consumed when the request is refused.
-- KEYS[1] GCRA theoretical arrival time (ms)   KEYS[2] today's counter
-- ARGV[1] rate per second   ARGV[2] burst   ARGV[3] daily quota   ARGV[4] ms until day end
-- Returns { 1, 0, 'ok' } admitted; { 0, retry_after_ms, 'rate' | 'quota' } refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = 1000 / tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
local allowed_ahead = interval * (burst - 1)
if ahead > allowed_ahead then
  return { 0, math.ceil(ahead - allowed_ahead), 'rate' }
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used >= tonumber(ARGV[3]) then
  return { 0, tonumber(ARGV[4]), 'quota' }
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 3600000)
return { 1, 0, 'ok' }
