-- deregister.lua: a node leaves gracefully; unmatchable at once, shown OFFLINE for retention.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes
-- KEYS[4]  zset   <p>:offline         OFFLINE nodes, score = when they went offline (ms)
-- KEYS[5]  stream <p>:events          node events (capped)
-- ARGV[1]  node_id
-- ARGV[2]  boot_id
-- ARGV[3]  retention (ms): how long the OFFLINE record stays readable
-- ARGV[4]  events stream max length (approximate)
--
-- Returns {code, now_ms}: 0 = deregistered (or already offline), 1 = unknown node,
-- 2 = boot_id is not the registered boot (a stale agent cannot remove a newer incarnation).

local now = now_ms()
local id = ARGV[1]

local rec = redis.call('HMGET', KEYS[1], 'boot', 'live')
if rec[1] == false then return {1, now} end
if rec[1] ~= ARGV[2] then return {2, now} end
if rec[2] == '3' then return {0, now} end

redis.call('HSET', KEYS[1], 'live', 3, 'gone', now, 'why', 'deregistered')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], now, id)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'type', 3, 'node', id, 'detail', 'deregistered')
return {0, now}
