-- Record one occurrence of an alert fingerprint (leadq-notify's shared dedupe state).
-- KEYS[1] last-sent marker of the fingerprint (string, expires after the rate-limit window)
-- KEYS[2] digest counts (hash: field -> occurrences)
-- KEYS[3] digest lines (hash: field -> the first occurrence's one-line summary)
-- KEYS[4] digest deadline (string: Redis ms when the digest is due)
-- ARGV[1] fingerprint  ARGV[2] 1 = wants an immediate message, 0 = digest only
-- ARGV[3] rate-limit ms  ARGV[4] batch window ms  ARGV[5] state TTL ms  ARGV[6] summary line
-- ARGV[7] most distinct lines a digest holds (the rest fold into one "other" line)
-- Returns 'send', 'rate_limited', 'batched' or 'deduplicated'.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
local field = ARGV[1]
local outcome = 'batched'
if ARGV[2] == '1' then
  if redis.call('SET', KEYS[1], now, 'NX', 'PX', tonumber(ARGV[3])) then
    return 'send'
  end
  outcome = 'rate_limited'
  field = 'r:' .. field
end
if redis.call('HEXISTS', KEYS[2], field) == 0
    and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[7]) then
  field = '+other'
end
local n = redis.call('HINCRBY', KEYS[2], field, 1)
if n == 1 then
  redis.call('HSET', KEYS[3], field, ARGV[6])
elseif outcome == 'batched' then
  outcome = 'deduplicated'
end
redis.call('SET', KEYS[4], now + tonumber(ARGV[4]), 'NX', 'PX', ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return outcome
