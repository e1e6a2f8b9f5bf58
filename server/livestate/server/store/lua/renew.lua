-- renew.lua: extend a running job's lease.
--
-- KEYS[1]  zset <p>:leases  live leases, score = expiry (ms)
-- KEYS[2]  zset <p>:outbox  assignments not yet settled: a Renew shows the scheduler has the
--                           lease, so its entry is done (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] lease_id
-- ARGV[20] fencing token the caller holds
-- ARGV[21] new TTL from now (ms)
--
-- Returns {code, expire_ms, job_id, node_id, scheduler}: 0 = renewed, 1 = no such lease (never
-- issued, released, or expired), 2 = the token is not the lease's (a stale holder).

local C = context()
local now = now_ms()
local key = C.lease .. ARGV[19]
local l = redis.call('HMGET', key, 'token', 'exp', 'job', 'node', 'sched', 'done')
if l[1] == false or l[6] or tonumber(l[2]) <= now then return {1, 0, '', '', ''} end
if l[1] ~= ARGV[20] then return {2, 0, '', '', ''} end
redis.call('ZREM', KEYS[2], ARGV[19])

local expire = now + tonumber(ARGV[21])
redis.call('HSET', key, 'exp', expire)
redis.call('PEXPIREAT', key, expire + C.margin)
redis.call('PEXPIREAT', job_lease_key(C, l[3]), expire + C.margin)
redis.call('ZADD', KEYS[1], expire, ARGV[19])
local nlease = C.nlease .. l[4]
if redis.call('PTTL', nlease) < expire + C.margin - now then
  redis.call('PEXPIREAT', nlease, expire + C.margin)
end
return {0, expire, l[3], l[4], l[5] or ''}
