-- Take the digest when it is due: whoever calls first gets it, once.
-- KEYS[1] digest counts  KEYS[2] digest lines  KEYS[3] digest deadline
-- Returns {} when nothing is due, else {field, count, line, field, count, line, ...}.
local due = redis.call('GET', KEYS[3])
if not due then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(due) then return {} end
local counts = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #counts, 2 do
  local line = redis.call('HGET', KEYS[2], counts[i]) or ''
  out[#out + 1] = counts[i]
  out[#out + 1] = counts[i + 1]
  out[#out + 1] = line
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return out
