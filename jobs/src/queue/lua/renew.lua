-- Extend the leases a worker still holds.
-- KEYS[1] jobs   KEYS[2] leases   ARGV[1] lease ms   then pairs: id, owner
-- Returns the ids whose lease is no longer this owner's (expired and taken over, or settled).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local lost = {}
local zargs = {}
for i = 2, #ARGV, 2 do
  local id, owner = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[1], id .. ':o') == owner then
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
  else
    lost[#lost + 1] = id
  end
end
if #zargs > 0 then
  redis.call('ZADD', KEYS[2], 'XX', unpack(zargs))
end
return lost
