-- Enqueue a batch of jobs of one kind, with deduplication, in one round trip.
-- KEYS[1] ready (zset of slots)   KEYS[2] jobs (hash)   KEYS[3] scheduled (zset)
-- KEYS[4] wake (list)   KEYS[5] fair (hash)   KEYS[6] index   KEYS[7] parked
-- KEYS[8] usage of the day (hash tenant -> jobs newly enqueued; billing reconciles it)
-- KEYS[8+i] dedupe key of job i
-- ARGV[1] dedupe ttl (ms; for a job due later, from when it is due)   ARGV[2] n
-- ARGV[3 + 5*(i-1)] id, then data, run_at (ms since epoch, 0 = now), tenant,
-- priority (0 high, 1 normal, 2 low)
-- Returns, per job: the id stored under its dedupe key (its own id when new, the earlier job's
-- id when it is a duplicate), so the caller can tell the two apart. The check and the set
-- are one SET NX inside this script: no check-then-act race between producers.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[5], KEYS[6], KEYS[7]
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
-- The server's clock, read only when a job has a run_at (most have none: one call saved).
local now
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
local ready = {}
local out = {}
for i = 1, n do
  local base = 3 + 5 * (i - 1)
  local id, data, run_at, tenant = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local prio = ARGV[base + 4]
  local dk = KEYS[8 + i]
  -- A job due later keeps its dedupe mark for the ttl after it is due: a producer that sends a
  -- follow-up for three days ahead again tomorrow must still find it.
  local later = run_at > 0 and run_at > clock()
  local keep = ttl
  if later then keep = string.format('%d', run_at - clock() + tonumber(ttl)) end
  local fresh = redis.call('SET', dk, id, 'NX', 'PX', keep)
  if fresh then
    if prio == '1' then
      redis.call('HSET', KEYS[2], id, data, id .. ':t', tenant)
    else
      redis.call('HSET', KEYS[2], id, data, id .. ':t', tenant, id .. ':p', prio)
    end
    if later then
      -- Due at run_at: its wait and its turnaround start there, not at its enqueue.
      redis.call('HSET', KEYS[2], id .. ':d', ARGV[base + 2] .. '/' .. ARGV[base + 2])
      redis.call('ZADD', KEYS[3], run_at, id)
    else
      ready[#ready + 1] = { id, tenant, prio }
    end
    if redis.call('HINCRBY', KEYS[8], tenant, 1) == 1 then
      redis.call('EXPIRE', KEYS[8], 691200)
    end
    out[i] = id
  else
    out[i] = redis.call('GET', dk)
  end
end
if #ready > 0 then
  fair_add(KEYS[1], ready)
  fair_wake(KEYS[4])
end
return out
