-- match.lua: pick an eligible idle node for a job in one partition and claim a slot on it; or,
-- when asked to, leave the job waiting in the partition's channel for its model.
--
-- KEYS[1]  zset   <p>:leases  live leases, score = expiry (ms)
-- KEYS[2]  string <p>:fence   fencing token counter
-- KEYS[3]  stream <p>:events  node events (capped)
-- KEYS[4]  hash   <p>:meta    hearing floor (see hearing in lib/hearing.lua)
-- KEYS[5]  zset   <p>:wexp    waiting jobs, score = when they stop waiting (ms)
-- KEYS[6]  set    <p>:wmodels models that have had waiting jobs (for ListQueues)
-- KEYS[7]  zset   <p>:outbox  assignments not yet settled on their job (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] job_id
-- ARGV[20] model
-- ARGV[21] min total VRAM (MiB), 0 = any
-- ARGV[22] allowed GPU models, comma-joined ("" = any)
-- ARGV[23] subcloud the node must belong to ("" = any)
-- ARGV[24] required labels, "key=value" lines joined by "\n" ("" = none)
-- ARGV[25] node ids never to return (excluded and already tried), comma-joined
-- ARGV[26] lease TTL (ms)
-- ARGV[27] policy: 1 longest idle, 2 random, 3 most free VRAM
-- ARGV[28] candidates to examine at most in this call (bounded work)
-- ARGV[29] cursor to resume from: "<source index>:<offset>" ("" = start)
-- ARGV[30] random seed (RANDOM policy)
-- ARGV[31] scheduler_id the assignment goes to ("" = the caller waits for it itself)
-- ARGV[32] 1 = wait in the channel when no node is eligible, 0 = just answer
-- ARGV[33] priority (-1000..1000; higher is served first)
-- ARGV[34] how long the job may wait (ms)
-- ARGV[35] isolated subclouds, comma-joined: their members are not for this job
-- ARGV[36] of ARGV[23] and ARGV[35], the subclouds whose membership is granted, comma-joined
--
-- Returns
--   {0, lease_id, fencing_token, expire_ms, node_id}  claimed, or the lease the job already
--                                                     holds here (a repeated call)
--   {1}                                               no eligible node (and not asked to wait)
--   {2, cursor}                                       examined ARGV[28] candidates without
--                                                     deciding: call again from cursor
--   {3, position}                                     waiting; position = jobs ahead of it
--   {4, model}                                        the job already waits here for another
--                                                     model: a job_id names one job
--
-- Why one script: choosing the node, checking its deadline and flags, taking the slot and writing
-- the lease are one step, so no node is ever handed out beyond its slots; and a job that finds no
-- node starts waiting in the same step, so a slot freed a moment later cannot miss it.
-- Where it looks: the idle queue of the model (nodes with a free slot, longest idle first) or,
-- when a minimum VRAM is asked, only the VRAM classes that can hold such a node, so one large node
-- behind thousands of small ones is found without walking them. Other filters are checked per
-- candidate; the walk is bounded per call but resumable, so NOT_FOUND means none was eligible.

local C = context()
local K = {leases = KEYS[1], fence = KEYS[2], meta = KEYS[4], wexp = KEYS[5], outbox = KEYS[7]}
local now = now_ms()
local job, model = ARGV[19], ARGV[20]

-- Idempotent by job_id: a copy of this call that already ran (a retry after a timeout, or a
-- concurrent duplicate) claimed the job's slot; answer with it.
local held, held_token, held_exp, held_node = job_lease(C, job, now)
if held then return {0, held, held_token, held_exp, held_node} end
local waiting_for = redis.call('HGET', C.wjob .. job, 'model')
if waiting_for and waiting_for ~= model then return {4, waiting_for} end

local req = requirements(ARGV[21], ARGV[22], ARGV[23], ARGV[24], ARGV[25], ARGV[35], ARGV[36])
req = exclude_tried(C, req, job)
local policy = ARGV[27]
local H = hearing(K.meta, now, C)
local budget = tonumber(ARGV[28])

local sources = {C.idle .. model}
if req.min_vram > 0 then
  sources = {}
  for class = vram_class(req.min_vram), 40 do sources[#sources + 1] = C.idlev .. class .. ':' .. model end
end

-- Longest idle wins on the first eligible node of a single queue; the other policies (and
-- several VRAM-class queues) compare a few eligible candidates.
local want = 1
if policy ~= '1' or #sources > 1 then want = 8 end
local found = {}
local src, offset = 1, 0
if ARGV[29] ~= '' then
  local s, o = string.match(ARGV[29], '^(%d+):(%d+)$')
  src, offset = tonumber(s), tonumber(o)
end
local chunk = 32
while src <= #sources and #found < want do
  if budget <= 0 then
    if #found > 0 then break end
    return {2, src .. ':' .. offset}
  end
  local hits = redis.call('ZRANGE', sources[src], offset, offset + chunk - 1, 'WITHSCORES')
  if #hits == 0 then
    src, offset = src + 1, 0
  else
    local dropped = 0
    for i = 1, #hits, 2 do
      local id = hits[i]
      budget = budget - 1
      local ok, vfree = eligible(C, id, req, now, H)
      if ok then
        found[#found + 1] = {id = id, idle = tonumber(hits[i + 1]), vfree = vfree}
        if #found >= want then break end
      elseif ok == false then
        redis.call('ZREM', sources[src], id)
        dropped = dropped + 1
      end
    end
    offset = offset + #hits / 2 - dropped
    if #hits < 2 * chunk then src, offset = src + 1, 0 end
  end
end

if #found == 0 then
  if ARGV[32] ~= '1' then return {1} end
  -- Wait in the channel: highest priority first, then oldest. A job already waiting here keeps
  -- its place.
  local wkey = C.wait .. model
  if redis.call('EXISTS', C.wjob .. job) == 0 then
    local expire = now + tonumber(ARGV[34])
    redis.call('HSET', C.wjob .. job, 'job', job, 'sched', ARGV[31], 'model', model, 'prio', ARGV[33],
      'enq', now, 'exp', expire, 'lttl', ARGV[26], 'vram', ARGV[21], 'gpus', ARGV[22], 'sub', ARGV[23],
      'labels', ARGV[24], 'excl', ARGV[25], 'iso', ARGV[35], 'grant', ARGV[36])
    redis.call('PEXPIREAT', C.wjob .. job, expire + C.margin)
    redis.call('ZADD', wkey, -tonumber(ARGV[33]) * 2199023255552 + now, job)
    redis.call('PEXPIRE', wkey, C.ttl)
    redis.call('ZADD', K.wexp, expire, job)
    redis.call('SADD', KEYS[6], model)
    redis.call('PEXPIRE', KEYS[6], C.ttl)
  end
  return {3, redis.call('ZRANK', wkey, job)}
end

local pick = found[1]
for _, c in ipairs(found) do
  if policy == '3' and c.vfree > pick.vfree then pick = c end
  if policy == '1' and c.idle < pick.idle then pick = c end
end
if policy == '2' then pick = found[(tonumber(ARGV[30]) % #found) + 1] end

local expire = now + tonumber(ARGV[26])
local lease_id, token = claim(C, K, pick.id, job, ARGV[31], expire, now)
unwait(C, K, job)
return {0, lease_id, token, expire, pick.id}
