-- renew.lua: extend a running job's lease.
--
-- KEYS[1]  zset <p>:leases  live leases, score = expiry (ms)
-- ARGV[1..8] key bases (lib.lua)
-- ARGV[9]  lease_id
-- ARGV[10] fencing token the caller holds
-- ARGV[11] new TTL from now (ms)
-- ARGV[12] lease record margin (ms)
--
-- Returns {code, expire_ms, job_id, node_id}: 0 = renewed, 1 = no such lease (never issued,
-- released, or expired), 2 = the token is not the lease's (a stale holder).

local B = bases()
local now = now_ms()
local key = B.lease .. ARGV[9]
local l = redis.call('HMGET', key, 'token', 'exp', 'job', 'node')
if l[1] == false or tonumber(l[2]) <= now then return {1, 0, '', ''} end
if l[1] ~= ARGV[10] then return {2, 0, '', ''} end

local expire = now + tonumber(ARGV[11])
redis.call('HSET', key, 'exp', expire)
redis.call('PEXPIREAT', key, expire + tonumber(ARGV[12]))
redis.call('ZADD', KEYS[1], expire, ARGV[9])
local nlease = B.nlease .. l[4]
if redis.call('PTTL', nlease) < expire + tonumber(ARGV[12]) - now then
  redis.call('PEXPIREAT', nlease, expire + tonumber(ARGV[12]))
end
return {0, expire, l[3], l[4]}
