-- One authentication failure from a source: counted in a fixed window; the failure that
-- reaches the limit starts a lockout. Returns the lockout's remaining ms (0: not locked).
-- KEYS[1] STRING failures in the window   KEYS[2] STRING lockout marker
-- ARGV[1] limit   ARGV[2] window (ms)   ARGV[3] lockout (ms)
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if n >= tonumber(ARGV[1]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('SET', KEYS[2], n, 'PX', tonumber(ARGV[3]))
    redis.call('DEL', KEYS[1])
  end
end
local left = redis.call('PTTL', KEYS[2])
if left < 0 then left = 0 end
return left
