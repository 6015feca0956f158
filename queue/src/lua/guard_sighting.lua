-- A principal seen acting on (or refused for) one subject: a sliding window of the distinct
-- subjects it touched, and whether that just crossed the threshold (once per window).
-- KEYS[1] ZSET subject -> last seen (ms)   KEYS[2] STRING raised marker
-- ARGV[1] subject   ARGV[2] window (ms)   ARGV[3] threshold   ARGV[4] most subjects kept
-- Returns { distinct subjects in the window, 1 if this call raised it else 0 }.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
-- Bounded: an attacker inventing subjects cannot grow the set past the cap (the oldest go).
local cap = tonumber(ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], window)
if n >= tonumber(ARGV[3]) then
  if redis.call('SET', KEYS[2], now, 'PX', window, 'NX') then
    return { n, 1 }
  end
end
return { n, 0 }
