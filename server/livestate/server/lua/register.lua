-- register.lua: register (or re-register) one node in its partition, atomically.
--
-- KEYS[1]  hash  <p>:node:<node_id>   the node record
-- KEYS[2]  zset  <p>:alive            ONLINE nodes, score = last seen (ms)
-- KEYS[3]  zset  <p>:suspect          SUSPECT nodes, score = last seen (ms)
-- KEYS[4]  zset  <p>:offline          OFFLINE nodes kept for retention, score = when they went offline (ms)
-- KEYS[5]  zset  <p>:nodes            every retained node, score 0 (lexicographic paging)
-- KEYS[6]  set   <p>:models           models with an index in this partition
-- KEYS[7]  set   <p>:subclouds        subclouds with an index in this partition
-- KEYS[8]  stream <p>:events          node events (capped)
-- KEYS[9]  hash   <p>:meta            partition sweep pulse (see hearing_floor in lib.lua)
-- ARGV[1]  node_id
-- ARGV[2]  boot_id
-- ARGV[3]  epoch (ms; see epoch.lua)
-- ARGV[4]  node record TTL (ms), refreshed by every beat
-- ARGV[5]  model index base "<p>:model:" (+ model name = zset of node ids, score 0)
-- ARGV[6]  subcloud index base "<p>:sub:" (+ subcloud name = zset of node ids, score 0)
-- ARGV[7]  events stream max length (approximate)
-- ARGV[8]  state (NodeState number)
-- ARGV[9]  free VRAM (MiB)
-- ARGV[10] models, comma-joined ("" for none)
-- ARGV[11] subclouds, comma-joined ("" for none)
-- ARGV[12..] spec fields as field, value pairs (env, region, gpu, ...; labels as "l:<key>")
--
-- Returns {code, restarted, now_ms}: code 0 = registered; restarted 1 when a previous boot (or
-- epoch) of the node was replaced, 0 for a first or repeated registration of the same boot.
--
-- Why one script: the record, the liveness sets and the indexes must never disagree, and a
-- re-registration replaces the previous boot's state without a window where both are visible.

local now = now_ms()
local id = ARGV[1]

local function as_set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local old = redis.call('HMGET', KEYS[1], 'boot', 'epoch', 'models', 'subs', 'seq', 'reg', 'live')
local existed = old[1] ~= false
local same_boot = existed and old[1] == ARGV[2] and tonumber(old[2]) == tonumber(ARGV[3])
local restarted = existed and not same_boot

local new_models = split(ARGV[10])
local new_subs = split(ARGV[11])

-- Drop index entries the new spec no longer carries.
if existed then
  local keep_m = as_set(new_models)
  for _, m in ipairs(split(old[3])) do
    if not keep_m[m] then redis.call('ZREM', ARGV[5] .. m, id) end
  end
  local keep_s = as_set(new_subs)
  for _, s in ipairs(split(old[4])) do
    if not keep_s[s] then redis.call('ZREM', ARGV[6] .. s, id) end
  end
end

local seq = '0'
local reg = now
if same_boot then
  seq = old[5] or '0'
  reg = old[6] or now
end

-- Rewrite the record whole: a new spec may have dropped labels.
redis.call('DEL', KEYS[1])
local fields = {'boot', ARGV[2], 'epoch', ARGV[3], 'seq', seq, 'reg', reg, 'seen', now,
  'live', 1, 'state', ARGV[8], 'vfree', ARGV[9], 'jobs', 0, 'models', ARGV[10], 'subs', ARGV[11]}
for i = 12, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[4])

redis.call('ZADD', KEYS[2], now, id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[5], 0, id)
for _, m in ipairs(new_models) do
  redis.call('ZADD', ARGV[5] .. m, 0, id)
  redis.call('SADD', KEYS[6], m)
end
for _, s in ipairs(new_subs) do
  redis.call('ZADD', ARGV[6] .. s, 0, id)
  redis.call('SADD', KEYS[7], s)
end

if not same_boot or old[7] ~= '1' then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[7], '*', 'type', 1, 'node', id,
    'detail', restarted and 'restarted' or 'registered')
end

-- A new partition counts as heard from now on, so a Redis stall before its first sweep is
-- recognised as a gap in hearing rather than as the nodes' silence.
redis.call('HSETNX', KEYS[9], 'pulse', now)

-- Partition-wide keys outlive their last writer by a node TTL at most (the sweeper refreshes
-- them while any server runs), so an abandoned partition evicts itself.
for i = 2, 9 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
for _, m in ipairs(new_models) do redis.call('PEXPIRE', ARGV[5] .. m, ARGV[4]) end
for _, s in ipairs(new_subs) do redis.call('PEXPIRE', ARGV[6] .. s, ARGV[4]) end

return {0, restarted and 1 or 0, now}
