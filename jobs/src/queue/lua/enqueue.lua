-- Enqueue a batch of jobs of one kind, with deduplication, in one round trip.
-- KEYS[1] ready (list)   KEYS[2] jobs (hash)   KEYS[3] scheduled (zset)   KEYS[4] wake (list)
-- KEYS[4+i] dedupe key of job i ('' when the job has no message id... never: every job has one)
-- ARGV[1] dedupe ttl (ms)   ARGV[2] n
-- ARGV[3 + 3*(i-1)] id, ARGV[4 + 3*(i-1)] data, ARGV[5 + 3*(i-1)] run_at (ms since epoch, 0 = now)
-- Returns, per job: the id stored under its dedupe key (its own id when new, the earlier job's
-- id when it is a duplicate), so the caller can tell the two apart.
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = {}
local out = {}
for i = 1, n do
  local base = 3 + 3 * (i - 1)
  local id, data, run_at = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local dk = KEYS[4 + i]
  local fresh = redis.call('SET', dk, id, 'NX', 'PX', ttl)
  if fresh then
    redis.call('HSET', KEYS[2], id, data)
    if run_at > now then
      redis.call('ZADD', KEYS[3], run_at, id)
    else
      ready[#ready + 1] = id
    end
    out[i] = id
  else
    out[i] = redis.call('GET', dk)
  end
end
if #ready > 0 then
  redis.call('LPUSH', KEYS[1], unpack(ready))
  if redis.call('LLEN', KEYS[4]) < 8 then
    redis.call('LPUSH', KEYS[4], '1')
  end
end
return out
