-- register.lua: register (or re-register) one node in its partition, atomically.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes, score = last seen (ms)
-- KEYS[4]  zset   <p>:offline         OFFLINE nodes kept for retention, score = when they went offline (ms)
-- KEYS[5]  zset   <p>:nodes           every retained node, score 0 (lexicographic paging)
-- KEYS[6]  set    <p>:models          models with an index in this partition
-- KEYS[7]  set    <p>:subclouds       subclouds with an index in this partition
-- KEYS[8]  stream <p>:events          node events (capped)
-- KEYS[9]  hash   <p>:meta            partition sweep pulse and last outage (see hearing in lib/hearing.lua)
-- KEYS[10] zset   <p>:leases          live leases, score = expiry (ms)
-- KEYS[11] string <p>:fence           fencing token counter
-- KEYS[12] zset   <p>:wexp            waiting jobs, score = when they stop waiting (ms)
-- KEYS[13] zset   <p>:drains          draining nodes with a deadline, score = the deadline (ms)
-- KEYS[14] zset   <p>:flagexp         flags with a TTL (see flag_expiry in lib/control.lua)
-- KEYS[15] zset   <p>:outbox          assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] node_id
-- ARGV[20] boot_id
-- ARGV[21] state (NodeState number)
-- ARGV[22] free VRAM (MiB)
-- ARGV[23] models, comma-joined ("" for none)
-- ARGV[24] subclouds, comma-joined ("" for none)
-- ARGV[25] jobs the agent says it is running
-- ARGV[26] flags to bring in, JSON {field: value} of control-hash fields ('<kind>' = expiry ms
--          or 0, '<kind>:meta', '<kind>:from', '<kind>:until' = DRAIN deadline, 'score', ...):
--          flags set while the node was not registered, or carried from the partition it left;
--          "" for none
-- ARGV[27] memberships of granted subclouds the node lists, JSON {subcloud: '<version>:<0|1>'}
--          as the grant records said when read (see grant_apply in lib/control.lua); "" for none
-- ARGV[28..] spec fields as field, value pairs (env, region, gpu, ...; labels as "l:<key>")
--
-- Returns {code, restarted, now_ms, assignment...}: code 0 = registered; restarted 1 when a
-- previous boot of the node was replaced (its leases are dropped, LEASE_LOST), 0 otherwise; then
-- the waiting jobs the node was handed at once (sextuples, see serve_waiting in lib/waiting.lua).
--
-- Why one script: the record, the liveness sets, the indexes and the idle queues must never
-- disagree, and a restart replaces the previous boot's state without a window where both count.
-- Flags come in here too, before the node is put into any idle queue or offered a waiting job:
-- a node is never matchable, not for an instant, without the flags set on it.
-- Leases: a re-registration of the same boot keeps the leases it holds (the agent is still
-- running those jobs). When the state was lost instead (a new epoch, or the node had gone
-- OFFLINE and lost its leases), the jobs the agent reports running occupy 'ghost' slots until
-- its beats report them finished, so the node is not handed more jobs than it has slots.

local C = context()
local K = {leases = KEYS[10], fence = KEYS[11], meta = KEYS[9], wexp = KEYS[12], outbox = KEYS[15]}
local now = now_ms()
local id = ARGV[19]

local old = redis.call('HMGET', KEYS[1], 'boot', 'epoch', 'models', 'subs', 'seq', 'reg', 'live', 'used', 'vram')
local existed = old[1] ~= false
local same_boot = existed and old[1] == ARGV[20] and tonumber(old[2]) == C.epoch
local restarted = existed and old[1] ~= ARGV[20]

local new_models = split(ARGV[23])
local new_subs = split(ARGV[24])

if existed then
  -- Index entries the new spec no longer carries go; idle queues are rebuilt below.
  local keep_m = as_set(new_models)
  for _, m in ipairs(split(old[3])) do
    if not keep_m[m] then redis.call('ZREM', C.model .. m, id) end
  end
  local keep_s = as_set(new_subs)
  for _, s in ipairs(split(old[4])) do
    if not keep_s[s] then redis.call('ZREM', C.sub .. s, id) end
  end
  idle_leave(C, id, old[3], old[9])
end

local seq, reg, used = '0', now, 0
if same_boot and old[7] ~= LIVE_OFFLINE then
  seq, reg, used = old[5] or '0', old[6] or now, tonumber(old[8] or '0')
else
  -- A restarted node runs none of the jobs it was leased for; a returning OFFLINE node lost its
  -- leases when it went offline; leases stamped by an older epoch come from a stale snapshot.
  leases_drop(C, K, KEYS[8], id, restarted and 'restarted' or 'registered')
end
local ghost = math.max(0, tonumber(ARGV[25]) - used)

-- Flags first: from here on the node may be matchable.
if ARGV[26] ~= '' then
  local ctl = C.ctl .. id
  for field, value in pairs(cjson.decode(ARGV[26])) do
    redis.call('HSET', ctl, field, value)
    if string.match(field, '^%d+$') then
      flag_expiry(KEYS[14], id, field, value)
      event(KEYS[8], C.maxlen, EV_FLAGGED, id, 'kind=' .. field)
    elseif field == FLAG_DRAIN .. ':until' then
      redis.call('ZADD', KEYS[13], value, id)
    end
  end
  ctl_keep(ctl, now, C.margin)
end
-- Memberships too, before the node is matchable; a version older than the one the control hash
-- holds was read before a change that already reached this partition, and is dropped.
if ARGV[27] ~= '' then
  local ctl = C.ctl .. id
  for sub, value in pairs(cjson.decode(ARGV[27])) do grant_apply(ctl, sub, value) end
  ctl_keep(ctl, now, C.margin)
end

-- Rewrite the record whole: a new spec may have dropped labels.
redis.call('DEL', KEYS[1])
local fields = {'boot', ARGV[20], 'epoch', C.epoch, 'seq', seq, 'reg', reg, 'seen', now,
  'live', 1, 'state', ARGV[21], 'vfree', ARGV[22], 'jobs', ARGV[25], 'used', used, 'ghost', ghost,
  'models', ARGV[23], 'subs', ARGV[24]}
for i = 28, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], C.ttl)

redis.call('ZADD', KEYS[2], now, id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[5], 0, id)
for _, m in ipairs(new_models) do
  redis.call('ZADD', C.model .. m, 0, id)
  redis.call('PEXPIRE', C.model .. m, C.ttl)
  redis.call('SADD', KEYS[6], m)
end
for _, s in ipairs(new_subs) do
  redis.call('ZADD', C.sub .. s, 0, id)
  redis.call('PEXPIRE', C.sub .. s, C.ttl)
  redis.call('SADD', KEYS[7], s)
end
idle_sync(C, id, now, false)

if not same_boot or old[7] ~= '1' then
  event(KEYS[8], C.maxlen, EV_ONLINE, id, restarted and 'restarted' or 'registered')
end

-- A new partition counts as heard from now on, so a Redis stall before its first sweep is
-- recognised as a gap in hearing rather than as the nodes' silence.
redis.call('HSETNX', KEYS[9], 'pulse', now)

-- Partition-wide keys outlive their last writer by a node TTL at most (the sweeper refreshes
-- them while any server runs), so an abandoned partition evicts itself.
for i = 2, 9 do redis.call('PEXPIRE', KEYS[i], C.ttl) end

return append({0, restarted and 1 or 0, now}, serve_waiting(C, K, id, now))
