-- Settle a batch of leased jobs.
-- KEYS[1] jobs   KEYS[2] leases   KEYS[3] scheduled   KEYS[4] dead (zset id -> ms)
-- KEYS[5] dead_data (hash)   KEYS[6] done (zset id -> ms)   KEYS[7] stats (hash)
-- KEYS[8] policy (hash)   KEYS[9] ready   KEYS[10] wake   KEYS[11] fair   KEYS[12] index
-- KEYS[13] parked
-- ARGV[1] n   ARGV[2] default max attempts   ARGV[3] default backoff base ms
-- ARGV[4] default backoff max ms   (the policy in KEYS[8] wins; it is read only for a retry)
-- then per entry, 5 values: id, owner, action, a, b
--   action 'ok'      completed
--   action 'retry'   transient failure: a = error code, b = jitter in [0, 1)
--   action 'dead'    permanent failure: a = reason, b = error code
--   action 'snooze'  rate-limited: a = delay ms (no attempt used), b = error code
--   action 'release' handed back unfinished at shutdown (no attempt used)
-- Returns one string per entry: the action taken, 'completed', 'retried:<delay ms>',
-- 'dead:<reason>', 'snoozed:<delay ms>' or 'released', or 'lost' when the lease is no longer
-- this owner's. (A flat list of strings, not a table per entry: 'completed' is the same
-- interned Lua string every time, so the common case allocates nothing per job.) One more
-- string, 'woke', follows the entries when the call pushed a wake-up: the caller passes it on
-- to shard 0's list, where idle workers wait.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[11], KEYS[12], KEYS[13]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Formatted once: a Lua number passed to redis.call is formatted again for every element.
local now_s = tostring(now)
local n = tonumber(ARGV[1])
local max_attempts, base_ms, max_ms
local function policy()
  if not max_attempts then
    local pol = redis.call('HMGET', KEYS[8], 'max_attempts', 'backoff_base_ms', 'backoff_max_ms')
    max_attempts = tonumber(pol[1]) or tonumber(ARGV[2])
    base_ms = tonumber(pol[2]) or tonumber(ARGV[3])
    max_ms = tonumber(pol[3]) or tonumber(ARGV[4])
  end
end
local out = {}
local completed, retried, dead, snoozed = 0, 0, 0, 0
local ended = {}     -- tenant -> jobs of it no longer running (for concurrency caps)
local released = {}  -- jobs handed back to the front of the ready set

local function bury(id, attempts, reason, code, prio)
  local data = redis.call('HGET', KEYS[1], id)
  redis.call('HSET', KEYS[5], id, data or '', id .. ':r', reason, id .. ':c', code,
    id .. ':a', attempts)
  -- The priority comes back with a re-drive.
  if prio ~= '1' then redis.call('HSET', KEYS[5], id .. ':p', prio) end
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('HDEL', KEYS[1], id, id .. ':a', id .. ':o', id .. ':x', id .. ':e', id .. ':t',
    id .. ':p', id .. ':d')
  dead = dead + 1
end

-- Calls `cmd key list...` in slices, so a large batch never exceeds Lua's unpack limit.
local function batched(cmd, key, list)
  for i = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

-- Every action is checked before anything is written: a bad entry fails the whole batch.
local known = { ok = true, retry = true, dead = true, snooze = true, release = true }
for i = 1, n do
  local action = ARGV[4 + 5 * (i - 1) + 3]
  if not known[action] then
    return redis.error_reply('unknown ack action ' .. tostring(action))
  end
end

-- One read of every entry's owner, attempts, tenant and priority; the common writes (lease
-- removed, job data deleted, completion recorded) go as one call each for the whole batch.
local fields = {}
for i = 1, n do
  local id = ARGV[4 + 5 * (i - 1) + 1]
  fields[#fields + 1] = id .. ':o'
  fields[#fields + 1] = id .. ':a'
  fields[#fields + 1] = id .. ':t'
  fields[#fields + 1] = id .. ':p'
end
local cur = {}
for i = 1, #fields, 4000 do
  local part = redis.call('HMGET', KEYS[1], unpack(fields, i, math.min(i + 3999, #fields)))
  for _, v in ipairs(part) do cur[#cur + 1] = v end
end
local unleased, erased, finished = {}, {}, {}
local seen = {}

for i = 1, n do
  local b = 4 + 5 * (i - 1)
  local id, owner, action, a1, a2 = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local c = 4 * (i - 1)
  -- The same job twice in one batch: only its first entry counts. An empty owner is no lease
  -- (`:o` is empty on every job between leases).
  if owner == '' or cur[c + 1] ~= owner or seen[id] then
    out[#out + 1] = 'lost'
  else
    seen[id] = true
    unleased[#unleased + 1] = id
    local attempts = tonumber(cur[c + 2]) or 1
    local tenant, prio = cur[c + 3] or '', cur[c + 4] or '1'
    ended[tenant] = (ended[tenant] or 0) + 1
    if action == 'ok' then
      -- The field names built for the read above are reused (each concatenation is a new
      -- Lua string: this loop is the hot path of every completed job).
      erased[#erased + 1] = id
      erased[#erased + 1] = fields[c + 1]
      erased[#erased + 1] = fields[c + 2]
      erased[#erased + 1] = fields[c + 3]
      if prio ~= '1' then erased[#erased + 1] = fields[c + 4] end
      erased[#erased + 1] = id .. ':d'
      -- A lease expiry (`:x`) or a retry (`:e`) happens to an earlier attempt, so a first
      -- attempt has neither (snooze and release give back only their own attempt).
      if attempts > 1 then
        erased[#erased + 1] = id .. ':x'
        erased[#erased + 1] = id .. ':e'
      end
      finished[#finished + 1] = now_s
      finished[#finished + 1] = id
      completed = completed + 1
      out[#out + 1] = 'completed'
    elseif action == 'retry' then
      policy()
      if attempts >= max_attempts then
        bury(id, attempts, 'max_attempts', a1, prio)
        out[#out + 1] = 'dead:max_attempts'
      else
        local delay = base_ms * (2 ^ (attempts - 1))
        if delay > max_ms then delay = max_ms end
        -- "Equal jitter": half fixed, half random, so retries spread without ever collapsing to 0.
        delay = math.floor(delay / 2 + (delay / 2) * tonumber(a2))
        redis.call('HSET', KEYS[1], id .. ':o', '', id .. ':e', a1)
        redis.call('ZADD', KEYS[3], now + delay, id)
        retried = retried + 1
        out[#out + 1] = 'retried:' .. delay
      end
    elseif action == 'dead' then
      bury(id, attempts, a1, a2, prio)
      out[#out + 1] = 'dead:' .. a1
    elseif action == 'snooze' then
      -- The attempt is given back, and the job's wait starts again when the snooze ends; its
      -- turnaround keeps its start (`:d` is "<due>" or "<due>/<turnaround start>").
      local due = string.format('%d', now + tonumber(a1))
      local since = string.match(redis.call('HGET', KEYS[1], id .. ':d') or '', '/(%d+)$')
      local mark = due
      if since then mark = due .. '/' .. since end
      redis.call('HSET', KEYS[1], id .. ':o', '', id .. ':a', attempts - 1, id .. ':d', mark)
      redis.call('ZADD', KEYS[3], due, id)
      snoozed = snoozed + 1
      out[#out + 1] = 'snoozed:' .. a1
    elseif action == 'release' then
      redis.call('HSET', KEYS[1], id .. ':o', '', id .. ':a', attempts - 1)
      released[#released + 1] = { id, tenant, prio, fair_clock() }
      out[#out + 1] = 'released'
    end
  end
end
batched('ZREM', KEYS[2], unleased)
batched('HDEL', KEYS[1], erased)
batched('ZADD', KEYS[6], finished)
fair_add(KEYS[9], released)
-- A wake-up for jobs back on the ready set, and for retries and snoozes: a worker that drained
-- the queue waits for one before it fetches again, and learns from that fetch when they are due.
if fair_ended(KEYS[9], ended) + #released + retried + snoozed > 0 then
  fair_wake(KEYS[10])
  out[#out + 1] = 'woke'
end
-- The `done` set is trimmed (by count and age) by the reaper, once a second.
if completed > 0 then redis.call('HINCRBY', KEYS[7], 'completed', completed) end
if retried > 0 then redis.call('HINCRBY', KEYS[7], 'retried', retried) end
if retried + dead > 0 then redis.call('HINCRBY', KEYS[7], 'failed', retried + dead) end
if dead > 0 then redis.call('HINCRBY', KEYS[7], 'dead', dead) end
if snoozed > 0 then redis.call('HINCRBY', KEYS[7], 'rate_limited', snoozed) end
return out
