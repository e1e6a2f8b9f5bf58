-- beat.lua: one heartbeat of one node, atomically.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes, score = last seen (ms)
-- KEYS[4]  stream <p>:events          node events (capped)
-- KEYS[5]  hash   <p>:meta            partition sweep pulse and hearing floor (see lib.lua)
-- ARGV[1..8] key bases (lib.lua)
-- ARGV[9]  node_id
-- ARGV[10] boot_id
-- ARGV[11] epoch the server knows (ms); records stamped with an older one are stale
-- ARGV[12] seq (0 = the agent does not number its beats: always applied)
-- ARGV[13] state (NodeState number)
-- ARGV[14] free VRAM (MiB)
-- ARGV[15] running jobs
-- ARGV[16] node record TTL (ms)
-- ARGV[17] events stream max length (approximate)
-- ARGV[18] offline_after (ms): a beat this late finds the node already OFFLINE, sweep or not
-- ARGV[19] sweep gap (ms): see hearing_floor in lib.lua
--
-- Returns {code, now_ms}:
--   0 = applied
--   1 = resync: unknown node, another boot, a stale epoch, or OFFLINE (register again)
--   2 = acknowledged but not applied: seq not newer than the last applied one
--   3 = free VRAM above the registered total (bad input; nothing written)
--
-- Why a script: the boot/epoch/seq checks and the deadline move must be one step, or a beat of
-- a dead boot could revive a record that a re-registration or the sweeper just replaced; and a
-- state change moves the node in or out of the idle queues in the same step.

local B = bases()
local now = now_ms()
local id = ARGV[9]

local rec = redis.call('HMGET', KEYS[1], 'boot', 'epoch', 'seq', 'live', 'vram', 'seen', 'state')
if rec[1] == false or rec[1] ~= ARGV[10] or tonumber(rec[2]) < tonumber(ARGV[11]) or rec[4] == LIVE_OFFLINE then
  return {1, now}
end
-- Past its offline deadline the node has lost its leases, whether or not a sweep has recorded
-- that yet; it must register again rather than be revived with state the server dropped.
local floor = hearing_floor(KEYS[5], now, ARGV[11], ARGV[19])
if now - math.max(tonumber(rec[6]), floor) > tonumber(ARGV[18]) then
  return {1, now}
end
local vram = tonumber(rec[5] or '0')
if vram > 0 and tonumber(ARGV[14]) > vram then
  return {3, now}
end

local code = 0
local seq = tonumber(ARGV[12])
if seq == 0 or seq > tonumber(rec[3]) then
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1, 'state', ARGV[13], 'vfree', ARGV[14],
    'jobs', ARGV[15], 'seq', ARGV[12] ~= '0' and ARGV[12] or rec[3])
  if rec[7] ~= ARGV[13] then idle_sync(B, id, now, ARGV[16], false) end
else
  -- An out-of-order beat still proves the node is alive; it just must not roll state back.
  code = 2
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[16])
redis.call('ZADD', KEYS[2], now, id)
if rec[4] == '2' then
  redis.call('ZREM', KEYS[3], id)
  event(KEYS[4], ARGV[17], EV_ONLINE, id, 'recovered')
end
return {code, now}
