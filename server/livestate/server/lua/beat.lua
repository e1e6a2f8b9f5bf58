-- beat.lua: one heartbeat of one node, atomically.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes, score = last seen (ms)
-- KEYS[4]  stream <p>:events          node events (capped)
-- KEYS[5]  hash   <p>:meta            partition sweep pulse and hearing floor (see lib.lua)
-- ARGV[1]  node_id
-- ARGV[2]  boot_id
-- ARGV[3]  epoch the server knows (ms); records stamped with an older one are stale
-- ARGV[4]  seq (0 = the agent does not number its beats: always applied)
-- ARGV[5]  state (NodeState number)
-- ARGV[6]  free VRAM (MiB)
-- ARGV[7]  running jobs
-- ARGV[8]  node record TTL (ms)
-- ARGV[9]  events stream max length (approximate)
-- ARGV[10] offline_after (ms): a beat this late finds the node already OFFLINE, sweep or not
-- ARGV[11] sweep gap (ms): see hearing_floor in lib.lua
--
-- Returns {code, now_ms}:
--   0 = applied
--   1 = resync: unknown node, another boot, a stale epoch, or OFFLINE (register again)
--   2 = acknowledged but not applied: seq not newer than the last applied one
--   3 = free VRAM above the registered total (bad input; nothing written)
--
-- Why a script: the boot/epoch/seq checks and the deadline move must be one step, or a beat of
-- a dead boot could revive a record that a re-registration or the sweeper just replaced.

local now = now_ms()
local id = ARGV[1]

local rec = redis.call('HMGET', KEYS[1], 'boot', 'epoch', 'seq', 'live', 'vram', 'seen')
if rec[1] == false or rec[1] ~= ARGV[2] or tonumber(rec[2]) < tonumber(ARGV[3]) or rec[4] == '3' then
  return {1, now}
end
-- Past its offline deadline the node has lost its leases, whether or not a sweep has recorded
-- that yet; it must register again rather than be revived with state the server dropped.
local floor = hearing_floor(KEYS[5], now, ARGV[3], ARGV[11])
if now - math.max(tonumber(rec[6]), floor) > tonumber(ARGV[10]) then
  return {1, now}
end
local vram = tonumber(rec[5] or '0')
if vram > 0 and tonumber(ARGV[6]) > vram then
  return {3, now}
end

local code = 0
local seq = tonumber(ARGV[4])
if seq == 0 or seq > tonumber(rec[3]) then
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1, 'state', ARGV[5], 'vfree', ARGV[6],
    'jobs', ARGV[7], 'seq', ARGV[4] ~= '0' and ARGV[4] or rec[3])
else
  -- An out-of-order beat still proves the node is alive; it just must not roll state back.
  code = 2
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], now, id)
if rec[4] == '2' then
  redis.call('ZREM', KEYS[3], id)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'type', 1, 'node', id, 'detail', 'recovered')
end
return {code, now}
