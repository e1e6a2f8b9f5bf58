-- del_if_equal.lua: delete a key only if it still holds the value the caller expects (a node's
-- locator that may have been rewritten by a newer registration, a job claim that may have
-- expired and been taken by another server).
--
-- KEYS[1]  string  the key (<prefix>:loc:<node_id>, <prefix>:jobclaim:<job_id>)
-- ARGV[1]  the expected value
--
-- Returns 1 when deleted, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
