-- forget.lua: remove a node from a partition it has left (it re-registered in another region).
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive
-- KEYS[3]  zset   <p>:suspect
-- KEYS[4]  zset   <p>:offline
-- KEYS[5]  zset   <p>:nodes
-- ARGV[1]  node_id
-- ARGV[2]  model index base "<p>:model:"
-- ARGV[3]  subcloud index base "<p>:sub:"
--
-- Returns 1 when a record was removed, 0 when the partition did not hold the node.

local existed = redis.call('EXISTS', KEYS[1])
remove_node(KEYS[1], ARGV[1], {KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, ARGV[2], ARGV[3])
return existed
