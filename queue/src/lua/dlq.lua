-- Re-drive or purge dead letters of one kind, by id, atomically per call.
-- KEYS[1] dead (zset)   KEYS[2] dead_data (hash)   KEYS[3] jobs (hash)   KEYS[4] ready (slots)
-- KEYS[5] wake (list)   KEYS[6] fair (hash)   KEYS[7] index   KEYS[8] parked
-- ARGV[1] 'redrive' | 'purge'   ARGV[2..] job ids
-- Re-drive puts the job back, with its envelope unchanged (same message_id, same signature)
-- and a fresh attempt count, at the head of the ready queue. Ids that are not dead letters
-- (already re-driven, purged, or never dead) are skipped. Returns the number handled.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[6], KEYS[7], KEYS[8]
local action = ARGV[1]
local done = 0
local now
local function now_ms()
  if not now then
    local t = redis.call('TIME')
    now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  return now
end
local back = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) then
    if action == 'redrive' then
      local cur = redis.call('HMGET', KEYS[2], id, id .. ':p')
      local data, prio = cur[1], cur[2] or '1'
      if data and data ~= '' then
        -- Behind the tenant's other ready work, like a new job of that tenant.
        local ok, env = pcall(cjson.decode, data)
        local tenant = ok and type(env) == 'table' and env.tenant_id
        -- A forged or malformed envelope's tenant_id may be null, a number, an object: the job
        -- goes back without a tenant (its consumer refuses it again), never half-way (a
        -- non-string HSET argument would stop this script after the letters before it).
        if type(tenant) ~= 'string' then tenant = '' end
        -- Due now: its wait (a first attempt again) and its turnaround start here, not at its
        -- enqueue days ago.
        local at = now_ms()
        redis.call('HSET', KEYS[3], id, data, id .. ':t', tenant, id .. ':d', at .. '/' .. at)
        if prio ~= '1' then redis.call('HSET', KEYS[3], id .. ':p', prio) end
        back[#back + 1] = { id, tenant, prio }
      end
    end
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id, id .. ':r', id .. ':c', id .. ':a', id .. ':p')
    done = done + 1
  end
end
if #back > 0 then
  fair_add(KEYS[4], back)
  fair_wake(KEYS[5])
end
return done
