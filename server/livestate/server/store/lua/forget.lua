-- forget.lua: remove a node from a partition it has left (it re-registered in another region).
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive
-- KEYS[3]  zset   <p>:suspect
-- KEYS[4]  zset   <p>:offline
-- KEYS[5]  zset   <p>:nodes
-- KEYS[6]  zset   <p>:leases
-- KEYS[7]  stream <p>:events
-- KEYS[8]  zset   <p>:outbox  assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] node_id
--
-- Returns 1 when a record was removed, 0 when the partition did not hold the node.

local C = context()
local existed = redis.call('EXISTS', KEYS[1])
leases_drop(C, {leases = KEYS[6], outbox = KEYS[8]}, KEYS[7], ARGV[19], 'moved')
remove_node(C, ARGV[19], {KEYS[2], KEYS[3], KEYS[4], KEYS[5]})
return existed
