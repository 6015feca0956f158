-- Take or keep the scheduler's leader lease.
-- KEYS[1] leader (string: worker id, expires)   ARGV[1] worker id   ARGV[2] lease ms
-- Returns the Redis clock (ms) when this worker leads, else 0.
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
