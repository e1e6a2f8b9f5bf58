-- deregister.lua: a node leaves gracefully; unmatchable at once, shown OFFLINE for retention.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes
-- KEYS[4]  zset   <p>:offline         OFFLINE nodes, score = when they went offline (ms)
-- KEYS[5]  stream <p>:events          node events (capped)
-- KEYS[6]  zset   <p>:leases          live leases, score = expiry (ms)
-- KEYS[7]  zset   <p>:outbox          assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] node_id
-- ARGV[20] boot_id
-- ARGV[21] retention (ms): how long the OFFLINE record stays readable
--
-- Returns {code, now_ms}: 0 = deregistered (or already offline), 1 = unknown node,
-- 2 = boot_id is not the registered boot (a stale agent cannot remove a newer incarnation).
-- The node's leases are dropped (LEASE_LOST): it runs no more jobs.

local C = context()
local now = now_ms()
local id = ARGV[19]

local rec = redis.call('HMGET', KEYS[1], 'boot', 'live', 'models', 'vram')
if rec[1] == false then return {1, now} end
if rec[1] ~= ARGV[20] then return {2, now} end
if rec[2] == LIVE_OFFLINE then return {0, now} end

idle_leave(C, id, rec[3], rec[4])
leases_drop(C, {leases = KEYS[6], outbox = KEYS[7]}, KEYS[5], id, 'deregistered')
redis.call('HSET', KEYS[1], 'live', 3, 'gone', now, 'why', 'deregistered')
redis.call('PEXPIRE', KEYS[1], ARGV[21])
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], now, id)
event(KEYS[5], C.maxlen, EV_OFFLINE, id, 'deregistered')
return {0, now}
