-- Recover jobs whose lease expired (their worker died or stalled) and promote due scheduled
-- jobs. Runs on every worker every second; each call handles a bounded slice.
-- KEYS[1] jobs   KEYS[2] leases   KEYS[3] ready   KEYS[4] dead   KEYS[5] dead_data
-- KEYS[6] stats   KEYS[7] wake   KEYS[8] scheduled   KEYS[9] fair
-- KEYS[10] the LIST of ready ids of versions before fair ordering (drained into ready)
-- KEYS[11] index   KEYS[12] parked   KEYS[13] done (zset of completed ids)
-- ARGV[1] max lease expiries before a job is 'poisoned'   ARGV[2] slice size
-- ARGV[3] dead-letter retention (ms): older dead letters are deleted, a slice per call
-- ARGV[4] completed ids kept (count)   ARGV[5] completed ids kept (age, ms): the rest of
-- `done` is trimmed, a slice per call (only ids live there: a finished job's data was deleted
-- when it finished)
-- Returns { recovered, poisoned, promoted, expired dead letters, woke (1 when it pushed a
-- wake-up: the caller passes it on to shard 0's list, where idle workers wait) }.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[9], KEYS[11], KEYS[12]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_exp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local recovered, poisoned = 0, 0
local ended, back = {}, {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local x = redis.call('HINCRBY', KEYS[1], id .. ':x', 1)
  local cur = redis.call('HMGET', KEYS[1], id, id .. ':a', id .. ':t', id .. ':p')
  local tenant, prio = cur[3] or '', cur[4] or '1'
  ended[tenant] = (ended[tenant] or 0) + 1
  if x > max_exp then
    redis.call('HSET', KEYS[5], id, cur[1] or '', id .. ':r', 'poisoned', id .. ':c',
      'lease_expired', id .. ':a', cur[2] or '0')
    if prio ~= '1' then redis.call('HSET', KEYS[5], id .. ':p', prio) end
    redis.call('ZADD', KEYS[4], now, id)
    redis.call('HDEL', KEYS[1], id, id .. ':a', id .. ':o', id .. ':x', id .. ':e', id .. ':t',
      id .. ':p', id .. ':d')
    poisoned = poisoned + 1
  else
    redis.call('HSET', KEYS[1], id .. ':o', '')
    -- It had reached the front once: it goes back to the front.
    back[#back + 1] = { id, tenant, prio, fair_clock() }
    recovered = recovered + 1
  end
end
fair_add(KEYS[3], back)
local unparked = fair_ended(KEYS[3], ended)
local due = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('ZREM', KEYS[8], unpack(due))
  fair_promote(KEYS[1], KEYS[3], due, false)
end
local legacy = redis.call('RPOP', KEYS[10], limit)
if legacy then
  fair_promote(KEYS[1], KEYS[3], legacy, false)
  due[#due + 1] = legacy[1]
end
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id, id .. ':r', id .. ':c', id .. ':a', id .. ':p')
end
local trim = math.max(redis.call('ZCARD', KEYS[13]) - tonumber(ARGV[4]),
  redis.call('ZCOUNT', KEYS[13], '-inf', '(' .. (now - tonumber(ARGV[5]))))
if trim > 0 then
  -- Up to 50 slices a call: removing a contiguous range is cheap per id, and the trim has to
  -- keep up with a second's completions.
  redis.call('ZREMRANGEBYRANK', KEYS[13], 0, math.min(trim, 50 * limit) - 1)
end
if poisoned > 0 then
  redis.call('HINCRBY', KEYS[6], 'dead', poisoned)
  redis.call('HINCRBY', KEYS[6], 'failed', poisoned)
end
if recovered > 0 then redis.call('HINCRBY', KEYS[6], 'recovered', recovered) end
local woke = 0
if recovered + #due + unparked > 0 then
  fair_wake(KEYS[7])
  woke = 1
end
return { recovered, poisoned, #due, #old, woke }
