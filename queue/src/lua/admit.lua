-- Admission at ingest for one tenant: a GCRA rate limit (rate per second with a burst) and a
-- daily quota, decided atomically. Nothing is consumed when the request is refused.
-- (gcra.lua is prepended.)
-- KEYS[1] GCRA theoretical arrival time (ms)   KEYS[2] today's counter
-- ARGV[1] rate per second   ARGV[2] burst   ARGV[3] daily quota   ARGV[4] ms until day end
-- Returns { 1, 0, 'ok' } admitted; { 0, retry_after_ms, 'rate' | 'quota' } refused.
local allowed, retry_ms, commit = gcra_check(KEYS[1], ARGV[1], ARGV[2])
if not allowed then
  return { 0, retry_ms, 'rate' }
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used >= tonumber(ARGV[3]) then
  return { 0, tonumber(ARGV[4]), 'quota' }
end
commit()
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 3600000)
return { 1, 0, 'ok' }
