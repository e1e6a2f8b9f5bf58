-- del_if_equal.lua: delete a key (or one field of a hash) only if it still holds the value the
-- caller expects: a node's locator that a newer registration may have rewritten, a job's lease
-- (or a scheduler's entry for a job) that a concurrent assignment may have replaced.
--
-- KEYS[1]  string or hash  the key (<prefix>:loc:<node_id>, <prefix>:job:<job_id>,
--                           <prefix>:sched:<scheduler_id>, <prefix>:sweeper)
-- ARGV[1]  the expected value
-- ARGV[2]  hash field to delete ("" or absent: the key is a string, delete the key)
--
-- Returns 1 when deleted, 0 otherwise.

if ARGV[2] ~= nil and ARGV[2] ~= '' then
  if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
    return redis.call('HDEL', KEYS[1], ARGV[2])
  end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
