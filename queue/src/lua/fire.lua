-- Claim one firing of a recurring task, once across all workers: only the current leader may,
-- and only for a firing later than the last one claimed.
-- KEYS[1] leader   KEYS[2] fired (hash name -> ms)   KEYS[3] log (list, newest first)
-- ARGV[1] worker id   ARGV[2] task name   ARGV[3] firing time (ms)
-- Returns 1 when claimed, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or -1
if tonumber(ARGV[3]) <= last then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[3], 0, 199)
return 1
