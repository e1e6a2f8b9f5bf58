-- locator_release.lua: delete a node's global locator only if it still points at the partition
-- that forgot the node (the node may have re-registered elsewhere since).
--
-- KEYS[1]  string <prefix>:loc:<node_id>  partition label of the node
-- ARGV[1]  the partition label that forgot the node
--
-- Returns 1 when deleted, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
