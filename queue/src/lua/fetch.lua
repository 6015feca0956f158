-- Lease up to n ready jobs. Due scheduled jobs are promoted first (in bounded slices, so a
-- large backlog never exceeds Lua's unpack limit and never blocks Redis for long).
-- KEYS[1] ready (zset of slots)   KEYS[2] jobs   KEYS[3] leases (zset id -> deadline ms)
-- KEYS[4] scheduled   KEYS[5] fair   KEYS[6] index   KEYS[7] parked
-- KEYS[8] this worker's suspect (string: the id of the suspect job it runs, see below)
-- KEYS[9] wake (list)
-- ARGV[1] n   ARGV[2] lease ms   ARGV[3] worker id   ARGV[4] max promoted per call
-- ARGV[5] '1' when KEYS[9] is the list the workers of this queue wait on (one shard), else '0'
-- ARGV[6] this fetch's number in the worker process (see the lease owner below)
-- Returns { now, next_due, drained, id1, data1, attempt1, due1, id2, ... }: due is the job's
-- due mark `:d` as stored ('' for a job due since its enqueue; see `queue/src/keys.rs`).
-- drained is 1 when this call took the last ready job (or found none): the worker then waits
-- for a wake-up, or until next_due, before it fetches again, instead of asking once more only
-- to find nothing. next_due is the due time (ms) of the earliest scheduled job, or -1 (none, or
-- not looked up: a fetch that returns jobs and leaves ready ones does not need it).
-- A drained fetch also empties the wake list when it is this shard's own (ARGV[5]): a wake-up
-- pushed for a job this call took, or another worker took, would only cost an empty fetch, and
-- every later change that makes a job ready pushes a wake-up of its own.
-- The lease owner is "<worker id>:<attempt>#<fetch number>": unique per lease, so an
-- acknowledgement from a lease that expired and was taken over is recognised and refused, and
-- so is a retried acknowledgement of a run whose job came back to the same worker at the same
-- attempt (a snooze gives its attempt back). The fetch number also names the leases of a fetch
-- whose reply the worker never read (`lua/release_owned.lua`).
-- A *suspect* is a job whose lease expired before (its worker died while running it, maybe
-- because of it). A worker runs at most one suspect at a time, so a job that kills its worker
-- takes no other suspect down with it again, and the jobs that merely shared a process with
-- it are never counted towards `poisoned` more than once.
FAIR_KEY, INDEX_KEY, PARKED_KEY = KEYS[5], KEYS[6], KEYS[7]
local READY, JOBS = KEYS[1], KEYS[2]
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The earliest scheduled job says whether any is due, and is next_due when none is: one read
-- where an empty or not-yet-due scheduled set would otherwise cost two.
local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local due = {}
if head[2] and tonumber(head[2]) <= now then
  due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  head = nil -- the promotion below changes it
end
-- Drained: every due job was promoted, and the ready set came up empty (set below).
local drained = false
if #due > 0 then
  redis.call('ZREM', KEYS[4], unpack(due))
  fair_promote(JOBS, READY, due, false)
end

local ids = {}        -- jobs to lease, in order
local lone = {}       -- index entries taken this round, one per tenant: removed at its end
local capped = {}     -- job id -> its tenant, for jobs of tenants with a concurrency cap
local running = {}    -- capped tenant -> jobs of it chosen by this call so far
-- `run`, the jobs `tenant` runs, counted against its cap when it has one (`allowed` slots).
local function counted(tenant, st, allowed, run)
  if st.cap then
    for _, id in ipairs(run) do capped[id] = tenant end
    running[tenant] = (running[tenant] or 0) + allowed
  end
  return run
end
-- Takes the slots of one tenant popped from `ready` (`slots`: their ids, `tags`: their
-- scores): parks them when the tenant is paused or at its cap, else chooses the tenant's best
-- jobs, swapping slots where the best job is not the slot's own. Returns the chosen ids, one
-- per slot kept, in slot order. (Parallel lists, not a table per slot: this runs for every
-- job, and every table is garbage for Lua's collector.)
local function take(tenant, slots, tags, st)
  local allowed = #slots
  if st.paused then
    allowed = 0
  elseif st.cap then
    allowed = math.max(math.min(allowed, st.cap - st.running), 0)
  end
  if allowed < #slots then
    local pargs = {}
    for i = allowed + 1, #slots do
      pargs[#pargs + 1] = 0
      pargs[#pargs + 1] = tenant .. '|' .. slots[i]
    end
    redis.call('ZADD', PARKED_KEY, unpack(pargs))
  end
  if allowed == 0 then return {} end
  local best = redis.call('ZRANGEBYLEX', INDEX_KEY, '[' .. tenant .. '|', '(' .. tenant .. '}',
    'LIMIT', 0, allowed)
  -- They are the first of the tenant's range: removed as one range, not member by member; a
  -- tenant's lone entry waits for the round's one ZREM of every such entry (with many tenants
  -- holding ready work, most fetched slots are their tenant's only one in the batch).
  if #best > 1 then
    redis.call('ZREMRANGEBYLEX', INDEX_KEY, '[' .. best[1], '[' .. best[#best])
  elseif #best == 1 then
    lone[#lone + 1] = best[1]
  end
  local chosen = {}
  local same = #best == allowed
  for i, m in ipairs(best) do
    local id = string.sub(m, #tenant + 4)
    chosen[i] = id
    if id ~= slots[i] then same = false end
  end
  -- The common case: the tenant's best jobs are the slots' own jobs, in the same order.
  if same then return counted(tenant, st, allowed, chosen) end
  local own = {}
  for _, id in ipairs(chosen) do own[id] = true end
  -- Slots whose job is not among the chosen hand over to a chosen job that is not a slot of
  -- this call (its own slot, later in `ready` or parked, becomes theirs).
  local spare = {}
  local taken = {}
  for i = 1, allowed do
    local id = slots[i]
    if own[id] then taken[id] = true else spare[#spare + 1] = i end
  end
  local run = {}
  local k = 1
  for _, id in ipairs(chosen) do
    if not taken[id] then
      local slot = spare[k]
      k = k + 1
      local score = redis.call('ZSCORE', READY, id)
      if score then
        redis.call('ZREM', READY, id)
        redis.call('ZADD', READY, score, slots[slot])
      elseif redis.call('ZREM', PARKED_KEY, tenant .. '|' .. id) == 1 then
        redis.call('ZADD', PARKED_KEY, 0, tenant .. '|' .. slots[slot])
      else
        -- An index entry without a slot cannot happen; never lose the slot's job over it.
        redis.call('ZADD', READY, tags[slot], slots[slot])
        drained = false
      end
    end
    run[#run + 1] = id
  end
  -- Slots left over had no index entry to give (written before the index existed): they run
  -- as they are.
  for i = k, #spare do run[#run + 1] = slots[spare[i]] end
  return counted(tenant, st, allowed, run)
end

-- May this worker take a suspect? Not while the one it took last is still leased by it.
-- Looked up only when a suspect comes up (rarely: only after a lease expired).
local may_suspect = nil
local function suspect_allowed()
  if may_suspect == nil then
    may_suspect = true
    local held = redis.call('GET', KEYS[8])
    if held then
      local o = redis.call('HGET', JOBS, held .. ':o')
      if o and string.sub(o, 1, #ARGV[3] + 1) == ARGV[3] .. ':' then may_suspect = false end
    end
  end
  return may_suspect
end
-- Suspects this worker may not take: back on the ready set after the last round, behind their
-- tenants' other ready work (at the front, the next fetch popped them first again, and with as
-- many suspects as a fetch asks for, every fetch came back with none of the jobs behind them).
local deferred = {}
-- Strings built once: a Lua number passed to redis.call is formatted for every element.
local deadline = tostring(now + tonumber(ARGV[2]))
local owner_prefix = ARGV[3] .. ':'
local owner_suffix = '#' .. ARGV[6]
local zargs, hargs, out = {}, {}, { now, -1, 0 }
-- Leases the jobs chosen in one round (`round`, their tenants in `round_tenant`), reading each
-- one's envelope, attempt and lease expiries: a job whose envelope is gone is dropped, and a
-- suspect this worker may not take is deferred. Only the jobs leased count as taken, so the
-- next round asks for the rest.
local function lease(round, round_tenant)
  local fields = {}
  for _, id in ipairs(round) do
    fields[#fields + 1] = id
    fields[#fields + 1] = id .. ':a'
    fields[#fields + 1] = id .. ':x'
    fields[#fields + 1] = id .. ':d'
  end
  local vals = redis.call('HMGET', JOBS, unpack(fields))
  for i, id in ipairs(round) do
    local data = vals[4 * i - 3]
    local take_it = data ~= false and data ~= nil
    if take_it and (tonumber(vals[4 * i - 1]) or 0) > 0 then
      if suspect_allowed() then
        may_suspect = false
        redis.call('SET', KEYS[8], id, 'EX', 86400)
      else
        local prio = redis.call('HGET', JOBS, id .. ':p') or '1'
        deferred[#deferred + 1] = { id, round_tenant[i] or '', prio, nil }
        take_it = false
      end
    end
    if take_it then
      local before = vals[4 * i - 2]
      local due = vals[4 * i]
      local attempt = '1'
      if before then attempt = tostring((tonumber(before) or 0) + 1) end
      ids[#ids + 1] = id
      zargs[#zargs + 1] = deadline
      zargs[#zargs + 1] = id
      hargs[#hargs + 1] = id .. ':a'
      hargs[#hargs + 1] = attempt
      hargs[#hargs + 1] = id .. ':o'
      hargs[#hargs + 1] = owner_prefix .. attempt .. owner_suffix
      out[#out + 1] = id
      out[#out + 1] = data
      out[#out + 1] = tonumber(attempt)
      out[#out + 1] = due or ''
    elseif capped[id] then
      running[capped[id]] = running[capped[id]] - 1
    end
  end
end

-- Slots of paused or capped tenants are parked as they come up, and suspects may be deferred,
-- so a few rounds may be needed to find n jobs to lease; bounded, so a fetch stays short.
local last = nil
for _ = 1, 4 do
  local want = n - #ids
  if want <= 0 then break end
  local popped = redis.call('ZPOPMIN', READY, want)
  -- Fewer slots than asked for: the ready set is empty now.
  drained = #popped < 2 * want and #due < tonumber(ARGV[4])
  if #popped == 0 then break end
  last = tonumber(popped[#popped])
  local fields = {}
  for i = 1, #popped, 2 do fields[#fields + 1] = popped[i] .. ':t' end
  local tenants = redis.call('HMGET', JOBS, unpack(fields))
  -- Per tenant: its slots' ids, tags and positions in this pop.
  local order, slots, tags, pos = {}, {}, {}, {}
  for i = 1, #fields do
    local tenant = tenants[i] or ''
    local s = slots[tenant]
    if not s then
      s = {}
      slots[tenant], tags[tenant], pos[tenant] = s, {}, {}
      order[#order + 1] = tenant
    end
    local j = #s + 1
    s[j] = popped[2 * i - 1]
    tags[tenant][j] = popped[2 * i]
    pos[tenant][j] = i
  end
  local states = fair_states(order)
  -- Jobs are handed out in slot order, so tenants stay interleaved within a batch.
  local at, at_tenant = {}, {}
  for i, tenant in ipairs(order) do
    local st = states[i]
    st.running = st.running + (running[tenant] or 0)
    local run = take(tenant, slots[tenant], tags[tenant], st)
    local p = pos[tenant]
    for j, id in ipairs(run) do
      at[p[j]] = id
      at_tenant[p[j]] = tenant
    end
  end
  if #lone > 0 then
    redis.call('ZREM', INDEX_KEY, unpack(lone))
    lone = {}
  end
  local round, round_tenant = {}, {}
  for i = 1, #fields do
    if at[i] then
      round[#round + 1] = at[i]
      round_tenant[#round] = at_tenant[i]
    end
  end
  if #round > 0 then lease(round, round_tenant) end
  -- The ready set is empty (and nothing went back to it): another round would find nothing.
  if drained then break end
end

-- The ready set came up empty, and nothing went back to it: the wake-ups left are stale.
local emptied = drained and #deferred == 0
-- next_due and drained, the second and third values of the reply (see above).
local function outlook(empty)
  if emptied and ARGV[5] == '1' then redis.call('DEL', KEYS[9]) end
  local next_due = -1
  if drained or empty then
    if not head then head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES') end
    next_due = tonumber(head[2]) or -1
  end
  return next_due, drained and 1 or 0
end

-- The virtual clock moves to the last tag served.
if last and last > fair_clock() then
  redis.call('HSET', FAIR_KEY, 'v', last)
  fair_v = last
end
-- Deferred suspects go behind every ready slot: at their tenants' next tags they came up first
-- again (a tenant with nothing else ready gets a head start, ahead of everything), for every
-- fetch of a worker already running a suspect. Workers without one take them when they come up.
if #deferred > 0 then
  local tail = redis.call('ZRANGE', READY, -1, -1, 'WITHSCORES')
  local behind = math.max(tonumber(tail[2]) or 0, last or 0) + FAIR_HEAD_START
  for _, d in ipairs(deferred) do d[4] = behind end
  fair_add(READY, deferred)
end
-- With nothing leased but suspects deferred, this worker may take none of them until its own
-- suspect is settled: it waits (a wake-up, or at most the worker's idle wait) instead of
-- fetching them again at once, and again, for as long as its suspect runs. The wake-ups are
-- left for the other workers.
if #deferred > 0 then drained = #ids == 0 end
if #ids == 0 then
  return { now, outlook(true) }
end
out[2], out[3] = outlook(false)
for tenant, r in pairs(running) do
  if r > 0 then redis.call('HINCRBY', FAIR_KEY, 'r:' .. tenant, r) end
end
redis.call('ZADD', KEYS[3], unpack(zargs))
redis.call('HSET', JOBS, unpack(hargs))
return out
