-- Hand back, without using an attempt, every job leased by one worker (graceful stop), or
-- only the jobs one of its fetches leased (a fetch whose reply the worker never read: the
-- connection failed or timed out after Redis ran it, or the worker was dropped mid-fetch).
-- This catches leases the worker's own book never saw. Commands on one connection run in
-- order, so a fetch sent on it before this script has already run when it looks; a fetch
-- still unread on a connection that failed may run after it (Redis stalled past the client's
-- timeout), and its leases then expire as before: best effort, with the lease as backstop.
-- KEYS[1] jobs   KEYS[2] leases   KEYS[3] ready   KEYS[4] wake   KEYS[5] fair   KEYS[6] index
-- KEYS[7] parked
-- ARGV[1] worker id   ARGV[2] max leases examined
-- ARGV[3] the fetch's number, or '' for every lease of the worker (owners are
--         "<worker id>:<attempt>#<fetch number>", see `lua/fetch.lua`)
-- Returns the number of jobs handed back.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[5], KEYS[6], KEYS[7]
local prefix = ARGV[1] .. ':'
local suffix = ''
if ARGV[3] ~= '' then suffix = '#' .. ARGV[3] end
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local released = 0
local ended, back = {}, {}
for _, id in ipairs(ids) do
  local cur = redis.call('HMGET', KEYS[1], id .. ':o', id .. ':a', id .. ':t', id .. ':p')
  local owner = cur[1]
  if owner and string.sub(owner, 1, #prefix) == prefix
      and (suffix == '' or string.sub(owner, -#suffix) == suffix) then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[1], id .. ':o', '', id .. ':a', math.max((tonumber(cur[2]) or 1) - 1, 0))
    local tenant = cur[3] or ''
    back[#back + 1] = { id, tenant, cur[4] or '1', fair_clock() }
    ended[tenant] = (ended[tenant] or 0) + 1
    released = released + 1
  end
end
fair_add(KEYS[3], back)
fair_ended(KEYS[3], ended)
if released > 0 then
  fair_wake(KEYS[4])
end
return released
