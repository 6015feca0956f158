-- Fair ordering of ready jobs across tenants, priorities within a tenant, per-tenant pause and
-- concurrency caps (prepended to every script that adds, takes or settles ready jobs).
--
-- Two structures, one job id in each:
-- * `ready` is a ZSET of *slots*: one member per ready job, scored by a virtual start tag
--   (start-time fair queuing). A tenant's slots get tags one 1/weight apart, starting no
--   earlier than the queue's virtual clock V (the tag of the last slot served). A tenant that
--   floods the queue pushes only its own tags far ahead; a tenant arriving later starts at V and
--   is served at once, interleaved with the flood in proportion to the weights. Fetching is
--   ZPOPMIN: the slot says *which tenant* runs next.
-- * `index` is a ZSET scored 0, ordered by member `<tenant>|<priority>|<job id>`: a tenant's
--   ready jobs by priority (0 high, 1 normal, 2 low), then by id (UUIDv7: creation order). When
--   a tenant's slot comes up, the tenant's *best* job runs; if that is not the job the slot was
--   labelled with, the two swap slots (the slot's job takes the best job's later slot).
--   Priorities therefore reorder a tenant's own work and never buy a tenant a larger share.
-- * `parked` is a ZSET scored 0, members `<tenant>|<job id>`: slots of tenants that are paused
--   or at their concurrency cap, taken out of `ready` when they came up and put back on resume
--   or when a running job of the tenant settles.
-- * A tenant with nothing ready (its next free tag has fallen behind V) is *new*: its next job
--   is tagged just before V, ahead of every slot already ready, instead of at V behind the slots
--   the busy tenants hold there. With 10,000 tenants holding ready work, a tenant's first job
--   would otherwise wait one whole round of them (one job each: half a second at 20,000 jobs/s);
--   with the head start it is the next job fetched. Only the first job of an idle spell gets
--   it (the tenant's next free tag is then ahead of V again), so a busy tenant never does and a
--   tenant gains at most one job per idle spell over its share: the "sparse flow" rule of
--   FQ-CoDel (RFC 8290, section 4.2).
-- State lives in the `fair` HASH: `v` = V, `f:<tenant>` = the tenant's next free tag,
-- `w:<tenant>` weight (default 1), `p:<tenant>` paused (1), `c:<tenant>` concurrency cap,
-- `r:<tenant>` jobs of the tenant leased now (kept only while a cap is set).
-- The caller sets FAIR_KEY (the fair hash), INDEX_KEY and PARKED_KEY before calling these.
local FAIR_KEY, INDEX_KEY, PARKED_KEY
local fair_v
local fair_f = {}
local fair_w = {}
local fair_dirty = {}
-- How far ahead of V a new tenant's first job goes (a power of two: exact in a double); never
-- more than half the tenant's step 1/weight, so its next job is tagged after V again.
local FAIR_HEAD_START = 1 / 1024

local function fair_clock()
  if not fair_v then
    fair_v = tonumber(redis.call('HGET', FAIR_KEY, 'v')) or 0
  end
  return fair_v
end

-- The tag of the next ready job of `tenant`. (V comes with the first tenant's read when the
-- script has not read it yet: one command, not two.)
local function fair_tag(tenant)
  tenant = tenant or ''
  if fair_f[tenant] == nil then
    local r
    if fair_v then
      r = redis.call('HMGET', FAIR_KEY, 'f:' .. tenant, 'w:' .. tenant)
    else
      r = redis.call('HMGET', FAIR_KEY, 'f:' .. tenant, 'w:' .. tenant, 'v')
      fair_v = tonumber(r[3]) or 0
    end
    fair_f[tenant] = tonumber(r[1]) or 0
    local w = tonumber(r[2]) or 1
    if w <= 0 then w = 1 end
    fair_w[tenant] = w
  end
  local s = fair_clock()
  if fair_f[tenant] > s then
    s = fair_f[tenant]
  else
    s = s - math.min(FAIR_HEAD_START, 0.5 / fair_w[tenant])
  end
  fair_f[tenant] = s + 1 / fair_w[tenant]
  fair_dirty[tenant] = true
  return s
end

-- Writes the tenants' next tags back.
local function fair_save()
  local args = {}
  for tenant, _ in pairs(fair_dirty) do
    args[#args + 1] = 'f:' .. tenant
    args[#args + 1] = fair_f[tenant]
  end
  if #args > 0 then
    redis.call('HSET', FAIR_KEY, unpack(args))
  end
  fair_dirty = {}
end

-- Wakes the workers waiting on `wake_key` (a list they `BLPOP`): one push, and a trim only when
-- the push made the list longer than WAKE_KEPT. Wake-ups nobody takes (no worker waiting) pile
-- up no further than that; a worker started later finds enough to fetch until it drains.
-- (`Queue::wake` in lib.rs keeps the same bound for the wake-ups it sends from Rust.)
local WAKE_KEPT = 8
local function fair_wake(wake_key)
  if redis.call('LPUSH', wake_key, '1') > WAKE_KEPT then
    redis.call('LTRIM', wake_key, 0, WAKE_KEPT - 1)
  end
end

local function fair_member(tenant, prio, id)
  return (tenant or '') .. '|' .. (prio or '1') .. '|' .. id
end

-- Adds ready jobs: `jobs` is a list of { id, tenant, priority, tag } (tag nil: behind the
-- tenant's other ready work). One ZADD per structure for the whole list.
local function fair_add(ready_key, jobs)
  if #jobs == 0 then return end
  local zargs, iargs = {}, {}
  for _, j in ipairs(jobs) do
    zargs[#zargs + 1] = j[4] or fair_tag(j[2])
    zargs[#zargs + 1] = j[1]
    iargs[#iargs + 1] = 0
    iargs[#iargs + 1] = fair_member(j[2], j[3], j[1])
  end
  redis.call('ZADD', ready_key, unpack(zargs))
  redis.call('ZADD', INDEX_KEY, unpack(iargs))
  fair_save()
end

-- Puts jobs (ids) on the ready set, reading each one's tenant and priority from the jobs hash;
-- `front` puts them at V (they had reached the front once), else behind the tenant's work.
local function fair_promote(jobs_key, ready_key, ids, front)
  if #ids == 0 then return end
  local fields = {}
  for _, id in ipairs(ids) do
    fields[#fields + 1] = id .. ':t'
    fields[#fields + 1] = id .. ':p'
  end
  local vals = redis.call('HMGET', jobs_key, unpack(fields))
  local jobs = {}
  for i, id in ipairs(ids) do
    local tag = nil
    if front then tag = fair_clock() end
    jobs[i] = { id, vals[2 * i - 1] or '', vals[2 * i] or '1', tag }
  end
  fair_add(ready_key, jobs)
end

-- Moves up to `n` parked slots of `tenant` back to the front of the ready set, at most
-- FAIR_UNPARK_MAX a call: a tenant's room under a large cap (cap - running) may be thousands,
-- and unpack() of that many would exceed Lua's stack after the ZREM below, stopping the script
-- half-way. The slots left parked come back with the next settle of the tenant's jobs.
local FAIR_UNPARK_MAX = 1000
local function fair_unpark(ready_key, tenant, n)
  if n <= 0 then return 0 end
  if n > FAIR_UNPARK_MAX then n = FAIR_UNPARK_MAX end
  local members = redis.call('ZRANGEBYLEX', PARKED_KEY, '[' .. tenant .. '|', '(' .. tenant .. '}',
    'LIMIT', 0, n)
  if #members == 0 then return 0 end
  local zargs = {}
  for _, m in ipairs(members) do
    zargs[#zargs + 1] = fair_clock()
    zargs[#zargs + 1] = string.sub(m, #tenant + 2)
  end
  redis.call('ZREM', PARKED_KEY, unpack(members))
  redis.call('ZADD', ready_key, unpack(zargs))
  return #members
end

-- Each tenant's controls, from one read: { paused, cap (nil: none), running }.
-- (V comes with it when the script has not read it yet.)
local function fair_states(tenants)
  local fields = {}
  for _, tenant in ipairs(tenants) do
    fields[#fields + 1] = 'p:' .. tenant
    fields[#fields + 1] = 'c:' .. tenant
    fields[#fields + 1] = 'r:' .. tenant
  end
  local with_v = not fair_v
  if with_v then fields[#fields + 1] = 'v' end
  local vals = redis.call('HMGET', FAIR_KEY, unpack(fields))
  if with_v then fair_v = tonumber(vals[#fields]) or 0 end
  local states = {}
  for i = 1, #tenants do
    states[i] = {
      paused = vals[3 * i - 2] ~= false,
      cap = tonumber(vals[3 * i - 1]),
      running = tonumber(vals[3 * i]) or 0,
    }
  end
  return states
end

-- Jobs of capped tenants stopped running (`ended`: tenant -> count): lowers their running
-- counts and lets as many parked slots back in as there is room under the cap.
local function fair_ended(ready_key, ended)
  local tenants = {}
  for tenant, _ in pairs(ended) do tenants[#tenants + 1] = tenant end
  if #tenants == 0 then return 0 end
  local states = fair_states(tenants)
  local back = 0
  for i, tenant in ipairs(tenants) do
    local st = states[i]
    local cap = st.cap
    if cap then
      local running = math.max(st.running - ended[tenant], 0)
      redis.call('HSET', FAIR_KEY, 'r:' .. tenant, running)
      if not st.paused then
        back = back + fair_unpark(ready_key, tenant, cap - running)
      end
    end
  end
  return back
end
