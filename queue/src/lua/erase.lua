-- Remove jobs (pending, scheduled or dead-lettered) by id, for erasure of personal data.
-- A job that is running (leased) is left alone: its handler checks the erasure tombstone.
-- KEYS[1] jobs   KEYS[2] ready   KEYS[3] scheduled   KEYS[4] leases
-- KEYS[5] dead   KEYS[6] dead_data   KEYS[7] index   KEYS[8] parked
-- ARGV: ids. Returns { removed, running }.
local removed, running = 0, 0
for _, id in ipairs(ARGV) do
  if redis.call('ZSCORE', KEYS[4], id) then
    running = running + 1
  else
    local cur = redis.call('HMGET', KEYS[1], id .. ':t', id .. ':p')
    local tenant = cur[1] or ''
    redis.call('ZREM', KEYS[7], tenant .. '|' .. (cur[2] or '1') .. '|' .. id)
    redis.call('ZREM', KEYS[8], tenant .. '|' .. id)
    local n = redis.call('ZREM', KEYS[2], id)
      + redis.call('ZREM', KEYS[3], id)
      + redis.call('HDEL', KEYS[1], id, id .. ':a', id .. ':o', id .. ':x', id .. ':e', id .. ':t',
        id .. ':p', id .. ':d')
      + redis.call('ZREM', KEYS[5], id)
      + redis.call('HDEL', KEYS[6], id, id .. ':r', id .. ':c', id .. ':a', id .. ':p')
    if n > 0 then removed = removed + 1 end
  end
end
return { removed, running }
