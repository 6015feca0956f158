-- Where one job is in one queue shard, read at one instant (the script only reads).
-- KEYS[1] jobs   KEYS[2] leases   KEYS[3] scheduled   KEYS[4] ready (slots)   KEYS[5] parked
-- KEYS[6] fair   KEYS[7] done   KEYS[8] dead
-- ARGV[1] job id
-- Returns { state, time ms, lease owner, tenant, attempts, last error code } ('' for what does
-- not apply or is not kept), state one of:
--   'running'    leased: time = lease deadline, owner = "<worker id>:<attempt>#<fetch number>"
--   'scheduled'  waiting for a retry delay, a rate limit or its run_at: time = due
--   'held'       ready, but its tenant's slot is parked (tenant paused or at its cap), or it
--                is still in the ready set while its tenant is paused (its slot is parked when
--                it comes up: fetch parks a paused tenant's slots lazily, see fetch.lua)
--   'pending'    ready: its slot waits in the ready set (or in the pre-fair-ordering list the
--                reaper drains)
--   'done'       completed: time = completion (while `done` keeps it)
--   'dead'       dead-lettered: time = dead-letter time
--   'none'       unknown here
-- A ready job's slot is labelled with its own id (fair.lua swaps labels so that the set of
-- labels always equals the tenant's index entries), so the slot says where the job is.
local id = ARGV[1]
local f = redis.call('HMGET', KEYS[1], id, id .. ':t', id .. ':o', id .. ':a', id .. ':e')
if f[1] then
  local tenant, attempts, err = f[2] or '', f[4] or '', f[5] or ''
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if deadline then return { 'running', deadline, f[3] or '', tenant, attempts, err } end
  local due = redis.call('ZSCORE', KEYS[3], id)
  if due then return { 'scheduled', due, '', tenant, attempts, err } end
  local state = 'pending'
  if redis.call('ZSCORE', KEYS[5], tenant .. '|' .. id) then
    state = 'held'
  elseif redis.call('ZSCORE', KEYS[4], id) and redis.call('HEXISTS', KEYS[6], 'p:' .. tenant) == 1 then
    state = 'held'
  end
  return { state, '', '', tenant, attempts, err }
end
local done = redis.call('ZSCORE', KEYS[7], id)
local dead = redis.call('ZSCORE', KEYS[8], id)
-- Never both (a re-drive takes a job out of `dead`); if ever, the later record stands.
if dead and (not done or tonumber(dead) >= tonumber(done)) then
  return { 'dead', dead, '', '', '', '' }
end
if done then return { 'done', done, '', '', '', '' } end
return { 'none', '', '', '', '', '' }
