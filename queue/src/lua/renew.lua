-- Extend the leases a worker still holds.
-- KEYS[1] jobs   KEYS[2] leases   ARGV[1] lease ms   then pairs: id, owner
-- Returns the ids whose lease another lease has taken over (it expired, was recovered and was
-- fetched again). Ids settled or handed back meanwhile (owner gone or empty) are not reported:
-- the worker is about to forget them anyway.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local lost = {}
local zargs = {}
for i = 2, #ARGV, 2 do
  local id, owner = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], id .. ':o')
  if cur == owner then
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
  elseif cur and cur ~= '' then
    lost[#lost + 1] = id
  end
end
if #zargs > 0 then
  redis.call('ZADD', KEYS[2], 'XX', unpack(zargs))
end
return lost
