-- settle.lua: record an assignment on its job, first writer wins. A job waiting in several
-- partitions can be handed a slot in two of them at once (no script spans partitions); the
-- job's record, one key, decides which lease it keeps.
--
-- KEYS[1]  hash  <prefix>:job:<job_id>  {lease, node, attempts, waiting, scheduler}
-- ARGV[1]  lease_id
-- ARGV[2]  node_id
-- ARGV[3]  record TTL (ms)
--
-- Returns {won, waiting}: won 1 when the job now holds this lease (0: it holds another, give
-- this one back); waiting = the partition labels the job was waiting in (to leave), "" if none.

if redis.call('HSETNX', KEYS[1], 'lease', ARGV[1]) == 0 and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return {0, ''}
end
local waiting = redis.call('HGET', KEYS[1], 'waiting') or ''
redis.call('HSET', KEYS[1], 'node', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, waiting}
