-- Per-tenant controls of one kind: pause, resume, concurrency cap.
-- KEYS[1] ready (slots)   KEYS[2] jobs   KEYS[3] leases   KEYS[4] wake   KEYS[5] fair
-- KEYS[6] index   KEYS[7] parked
-- ARGV[1] tenant   ARGV[2] 'pause' | 'resume' | 'cap' | 'more'
-- ARGV[3] cap (for 'cap'; 0 removes it)   ARGV[4] most parked slots moved back by this call
-- Returns { slots moved back to ready, parked slots of the tenant left }. A tenant with many
-- parked slots is resumed over several calls (each bounded), so Redis is never blocked long:
-- after a 'resume' or 'cap' that moved a full slice, 'more' moves the next one unless the
-- tenant was paused meanwhile (by another operator, between two calls): it never undoes a
-- pause, where calling 'resume' again would.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[5], KEYS[6], KEYS[7]
local tenant, action, slice = ARGV[1], ARGV[2], tonumber(ARGV[4])
local function parked_left()
  return redis.call('ZLEXCOUNT', PARKED_KEY, '[' .. tenant .. '|', '(' .. tenant .. '}')
end
-- Parked slots re-enter behind the tenant's other ready work, as if new: the tenant's share
-- of the queue is unchanged by the pause.
local function release(n)
  if n <= 0 then return 0 end
  local members = redis.call('ZRANGEBYLEX', PARKED_KEY, '[' .. tenant .. '|',
    '(' .. tenant .. '}', 'LIMIT', 0, n)
  if #members == 0 then return 0 end
  local zargs = {}
  for _, m in ipairs(members) do
    zargs[#zargs + 1] = fair_tag(tenant)
    zargs[#zargs + 1] = string.sub(m, #tenant + 2)
  end
  redis.call('ZREM', PARKED_KEY, unpack(members))
  redis.call('ZADD', KEYS[1], unpack(zargs))
  fair_save()
  fair_wake(KEYS[4])
  return #members
end

local moved = 0
if action == 'pause' then
  redis.call('HSET', FAIR_KEY, 'p:' .. tenant, 1)
elseif action == 'resume' or action == 'more' then
  if action == 'resume' then
    redis.call('HDEL', FAIR_KEY, 'p:' .. tenant)
  elseif redis.call('HGET', FAIR_KEY, 'p:' .. tenant) then
    return { 0, parked_left() }
  end
  local st = redis.call('HMGET', FAIR_KEY, 'c:' .. tenant, 'r:' .. tenant)
  local room = slice
  if st[1] then room = math.min(slice, tonumber(st[1]) - (tonumber(st[2]) or 0)) end
  moved = release(room)
elseif action == 'cap' then
  local cap = tonumber(ARGV[3])
  local paused = redis.call('HGET', FAIR_KEY, 'p:' .. tenant)
  if cap <= 0 then
    redis.call('HDEL', FAIR_KEY, 'c:' .. tenant, 'r:' .. tenant)
    if not paused then moved = release(slice) end
  else
    -- The running count is kept only while a cap is set: count the tenant's leases now.
    -- Leases are bounded by the workers' total concurrency.
    local running = 0
    local leased = redis.call('ZRANGE', KEYS[3], 0, -1)
    for i = 1, #leased, 500 do
      local fields = {}
      for j = i, math.min(i + 499, #leased) do fields[#fields + 1] = leased[j] .. ':t' end
      for _, t in ipairs(redis.call('HMGET', KEYS[2], unpack(fields))) do
        if t == tenant then running = running + 1 end
      end
    end
    redis.call('HSET', FAIR_KEY, 'c:' .. tenant, cap, 'r:' .. tenant, running)
    if not paused then moved = release(math.min(slice, cap - running)) end
  end
else
  return redis.error_reply('unknown tenant action ' .. tostring(action))
end
return { moved, parked_left() }
