-- settle.lua: record an assignment on its job, first writer wins. A job waiting in several
-- partitions can be handed a slot in two of them at once (no script spans partitions); the
-- job's record, one key, decides which lease it keeps. Idempotent: settling the same lease again
-- (the outbox drain after the caller already did, or two drainers at once) changes nothing.
--
-- KEYS[1]  hash  <prefix>:job:<job_id>  {lease, node, attempts, waiting, model}
-- ARGV[1]  lease_id
-- ARGV[2]  node_id
-- ARGV[3]  record TTL (ms)
--
-- Returns {status, detail}:
--   {1, waiting}  the job now holds this lease; waiting = the partition labels it was waiting
--                 in (to leave), "" if none
--   {2, ""}       the job already held this lease (settled before)
--   {0, lease_id} the job holds another lease: give this one back unless that one has ended

local held = redis.call('HGET', KEYS[1], 'lease')
if held == ARGV[1] then return {2, ''} end
if held then return {0, held} end
local waiting = redis.call('HGET', KEYS[1], 'waiting') or ''
redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'node', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, waiting}
