-- match.lua: pick an eligible idle node for a job in one partition and claim a slot on it.
--
-- KEYS[1]  zset   <p>:leases  live leases, score = expiry (ms)
-- KEYS[2]  string <p>:fence   fencing token counter
-- KEYS[3]  stream <p>:events  node events (capped)
-- KEYS[4]  hash   <p>:meta    hearing floor (see lib.lua)
-- ARGV[1..8] key bases (lib.lua)
-- ARGV[9]  job_id
-- ARGV[10] model
-- ARGV[11] min total VRAM (MiB), 0 = any
-- ARGV[12] allowed GPU models, comma-joined ("" = any)
-- ARGV[13] subcloud the node must belong to ("" = any)
-- ARGV[14] required labels, "key=value" lines joined by "\n" ("" = none)
-- ARGV[15] node ids never to return (excluded and already tried), comma-joined
-- ARGV[16] lease TTL (ms)
-- ARGV[17] policy: 1 longest idle, 2 random, 3 most free VRAM
-- ARGV[18] suspect_after (ms): a node silent this long is never matched, sweep or not
-- ARGV[19] epoch (ms)
-- ARGV[20] sweep gap (ms)
-- ARGV[21] candidates to examine at most in this call (bounded work)
-- ARGV[22] cursor to resume from: "<source index>:<offset>" ("" = start)
-- ARGV[23] lease id to create (the server makes it unique)
-- ARGV[24] lease record margin (ms): the record outlives its expiry so the sweep can end it
-- ARGV[25] random seed (RANDOM policy)
-- ARGV[26] idle queue TTL (ms)
--
-- Returns
--   {0, lease_id, fencing_token, expire_ms, node_id}  claimed
--   {1}                                               no eligible node in this partition
--   {2, cursor}                                       examined ARGV[21] candidates without
--                                                     deciding: call again from cursor
--
-- Why one script: choosing the node, checking its deadline and flags, taking the slot and writing
-- the lease are one step, so no node is ever handed out beyond its slots.
-- Where it looks: the idle queue of the model (nodes with a free slot, longest idle first) or,
-- when a minimum VRAM is asked, only the VRAM classes that can hold such a node, so one large node
-- behind thousands of small ones is found without walking them. Other filters are checked per
-- candidate; the walk is bounded per call but resumable, so NOT_FOUND means none was eligible.

local B = bases()
local now = now_ms()
local model = ARGV[10]
local min_vram = tonumber(ARGV[11])
local gpus = as_set(split(ARGV[12]))
local want_gpu = ARGV[12] ~= ''
local subcloud = ARGV[13]
local labels = {}
for _, line in ipairs(split(ARGV[14], '\n')) do
  local k, v = string.match(line, '^([^=]+)=(.*)$')
  labels[#labels + 1] = {k, v}
end
local excluded = as_set(split(ARGV[15]))
local policy = ARGV[17]
local suspect_after = tonumber(ARGV[18])
local floor = hearing_floor(KEYS[4], now, ARGV[19], ARGV[20])
local budget = tonumber(ARGV[21])

local sources = {B.idle .. model}
if min_vram > 0 then
  sources = {}
  for class = vram_class(min_vram), 40 do sources[#sources + 1] = B.idlev .. class .. ':' .. model end
end

local fields = {'state', 'live', 'seen', 'used', 'slots', 'vram', 'gpu', 'subs', 'vfree'}
for _, kv in ipairs(labels) do fields[#fields + 1] = 'l:' .. kv[1] end

-- nil: not eligible now; false: stale queue entry (drop it); true: eligible
local function eligible(id)
  local r = redis.call('HMGET', B.node .. id, unpack(fields))
  if r[1] == false or r[2] == LIVE_OFFLINE or r[1] ~= STATE_IDLE then return false end
  if tonumber(r[4] or '0') >= tonumber(r[5] or '1') then return false end
  if now - math.max(tonumber(r[3]), floor) > suspect_after then return nil end
  if tonumber(r[6] or '0') < min_vram then return nil end
  if want_gpu and not gpus[r[7]] then return nil end
  if subcloud ~= '' and not as_set(split(r[8]))[subcloud] then return nil end
  for i, kv in ipairs(labels) do
    if r[9 + i] ~= kv[2] then return nil end
  end
  if blocked(B, id, now) then return nil end
  return true, tonumber(r[9] or '0')
end

-- Longest idle wins on the first eligible node of a single queue; the other policies (and
-- several VRAM-class queues) compare a few eligible candidates.
local want = 1
if policy ~= '1' or #sources > 1 then want = 8 end
local found = {}
local src, offset = 1, 0
if ARGV[22] ~= '' then
  local s, o = string.match(ARGV[22], '^(%d+):(%d+)$')
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
      if not excluded[id] then
        local ok, vfree = eligible(id)
        if ok then
          found[#found + 1] = {id = id, idle = tonumber(hits[i + 1]), vfree = vfree}
          if #found >= want then break end
        elseif ok == false then
          redis.call('ZREM', sources[src], id)
          dropped = dropped + 1
        end
      end
    end
    offset = offset + #hits / 2 - dropped
    if #hits < 2 * chunk then src, offset = src + 1, 0 end
  end
end
if #found == 0 then return {1} end

local pick = found[1]
for _, c in ipairs(found) do
  if policy == '3' and c.vfree > pick.vfree then pick = c end
  if policy == '1' and c.idle < pick.idle then pick = c end
end
if policy == '2' then pick = found[(tonumber(ARGV[25]) % #found) + 1] end

-- Claim. Tokens never repeat, even across a Redis that lost the counter: each is at least the
-- Redis clock in ms times 1024, which only grows.
local id = pick.id
local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now * 1024)
redis.call('SET', KEYS[2], string.format('%d', token))
local lease_id = ARGV[23]
local expire = now + tonumber(ARGV[16])
local lease_key = B.lease .. lease_id
redis.call('HSET', lease_key, 'job', ARGV[9], 'node', id, 'token', string.format('%d', token), 'exp', expire)
redis.call('PEXPIREAT', lease_key, expire + tonumber(ARGV[24]))
redis.call('ZADD', KEYS[1], expire, lease_id)
redis.call('SADD', B.nlease .. id, lease_id)
redis.call('PEXPIREAT', B.nlease .. id, expire + tonumber(ARGV[24]))
redis.call('HINCRBY', B.node .. id, 'used', 1)
idle_sync(B, id, now, ARGV[26], true)
return {0, lease_id, string.format('%d', token), expire, id}
