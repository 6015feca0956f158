-- Hand back every job leased by one worker (graceful stop), without using an attempt.
-- This catches leases the worker's own book never saw: a fetch whose reply was not read
-- because the worker was being dropped. Commands on one connection run in order, so a fetch
-- sent before this script has already run when it looks.
-- KEYS[1] jobs   KEYS[2] leases   KEYS[3] ready   KEYS[4] wake   KEYS[5] fair
-- ARGV[1] worker id   ARGV[2] max leases examined
-- Returns the number of jobs handed back.
FAIR_KEY = KEYS[5]
local prefix = ARGV[1] .. ':'
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local released = 0
for _, id in ipairs(ids) do
  local cur = redis.call('HMGET', KEYS[1], id .. ':o', id .. ':a')
  local owner = cur[1]
  if owner and string.sub(owner, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[1], id .. ':o', '', id .. ':a', math.max((tonumber(cur[2]) or 1) - 1, 0))
    redis.call('ZADD', KEYS[3], fair_clock(), id)
    released = released + 1
  end
end
if released > 0 then
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 7)
end
return released
