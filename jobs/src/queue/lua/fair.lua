-- Fair ordering of ready jobs across tenants (prepended to the scripts that add ready jobs).
--
-- `ready` is a ZSET ordered by a virtual start tag (start-time fair queuing): a tenant's jobs
-- get tags one 1/weight apart, starting no earlier than the queue's virtual clock V (the tag
-- of the last job fetched). A tenant that floods the queue pushes only its own tags far ahead;
-- a tenant arriving later starts at V and is served at once, interleaved with the flood in
-- proportion to the weights. Within a tenant, tags increase: FIFO. Fetching is ZPOPMIN.
-- State lives in the `fair` HASH: `v` = V, `f:<tenant>` = the tenant's next free tag,
-- `w:<tenant>` = its weight (default 1).
-- The caller sets FAIR_KEY (the fair hash) before calling these.
local FAIR_KEY
local fair_v
local fair_f = {}
local fair_w = {}
local fair_dirty = {}

local function fair_clock()
  if not fair_v then
    fair_v = tonumber(redis.call('HGET', FAIR_KEY, 'v')) or 0
  end
  return fair_v
end

-- The tag of the next ready job of `tenant`.
local function fair_tag(tenant)
  tenant = tenant or ''
  if fair_f[tenant] == nil then
    local r = redis.call('HMGET', FAIR_KEY, 'f:' .. tenant, 'w:' .. tenant)
    fair_f[tenant] = tonumber(r[1]) or 0
    local w = tonumber(r[2]) or 1
    if w <= 0 then w = 1 end
    fair_w[tenant] = w
  end
  local s = math.max(fair_clock(), fair_f[tenant])
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

-- Puts due jobs (ids) on the ready set behind their tenants' earlier work.
local function fair_promote(jobs_key, ready_key, ids)
  if #ids == 0 then return end
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = id .. ':t' end
  local tenants = redis.call('HMGET', jobs_key, unpack(fields))
  local zargs = {}
  for i, id in ipairs(ids) do
    zargs[#zargs + 1] = fair_tag(tenants[i] or '')
    zargs[#zargs + 1] = id
  end
  redis.call('ZADD', ready_key, unpack(zargs))
  fair_save()
end
