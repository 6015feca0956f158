-- Lease up to n ready jobs. Due scheduled jobs are promoted first (in bounded slices, so a
-- large backlog never exceeds Lua's unpack limit and never blocks Redis for long).
-- KEYS[1] ready (zset, fair order)   KEYS[2] jobs   KEYS[3] leases (zset id -> deadline ms)
-- KEYS[4] scheduled   KEYS[5] fair
-- ARGV[1] n   ARGV[2] lease ms   ARGV[3] worker id   ARGV[4] max promoted per call
-- Returns { now, next_due, id1, data1, attempt1, id2, data2, attempt2, ... } where next_due is
-- the due time (ms) of the earliest scheduled job, or -1: an idle worker sleeps until then.
-- The lease owner is "<worker id>:<attempt>": unique per lease, so an acknowledgement from a
-- lease that expired and was taken over is recognised and refused.
FAIR_KEY = KEYS[5]
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  redis.call('ZREM', KEYS[4], unpack(due))
  fair_promote(KEYS[2], KEYS[1], due)
end
local popped = redis.call('ZPOPMIN', KEYS[1], n)
if #popped == 0 then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  return { now, tonumber(first[2]) or -1 }
end
local ids = {}
for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
-- The virtual clock moves to the last tag served.
local last = tonumber(popped[#popped])
if last > fair_clock() then redis.call('HSET', FAIR_KEY, 'v', last) end
local fields = {}
for i, id in ipairs(ids) do
  fields[#fields + 1] = id
  fields[#fields + 1] = id .. ':a'
end
local vals = redis.call('HMGET', KEYS[2], unpack(fields))
local deadline = now + tonumber(ARGV[2])
local zargs, hargs, out = {}, {}, { now, -1 }
for i, id in ipairs(ids) do
  local data = vals[2 * i - 1]
  if data then
    local attempt = (tonumber(vals[2 * i]) or 0) + 1
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
    hargs[#hargs + 1] = id .. ':a'
    hargs[#hargs + 1] = attempt
    hargs[#hargs + 1] = id .. ':o'
    hargs[#hargs + 1] = ARGV[3] .. ':' .. attempt
    out[#out + 1] = id
    out[#out + 1] = data
    out[#out + 1] = attempt
  end
end
if #zargs > 0 then
  redis.call('ZADD', KEYS[3], unpack(zargs))
  redis.call('HSET', KEYS[2], unpack(hargs))
end
return out
