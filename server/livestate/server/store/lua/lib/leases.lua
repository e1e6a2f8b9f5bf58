-- lib/leases.lua: leases: claiming a slot, ending and dropping leases, a job's tried nodes.

-- The key naming the lease a job holds in this partition (job_id -> lease_id), so a repeated
-- Match for the job, however it got here (a retry after a timeout, a concurrent copy), answers
-- with that lease instead of claiming a second slot. Lease ids contain '/', job keys do not.
local function job_lease_key(C, job)
  return C.lease .. 'job:' .. job
end
-- The nodes of this partition the job failed on (written by the Fail that decided it, so no
-- later step can lose it): every claim for the job skips them.
local function tried_key(C, job)
  return C.lease .. 'tried:' .. job
end
local function exclude_tried(C, req, job)
  for _, node in ipairs(redis.call('SMEMBERS', tried_key(C, job))) do req.excluded[node] = true end
  return req
end
-- A lease that is in force: its record exists, has not ended and has not expired.
local function lease_live(l_token, l_exp, l_done, now)
  return l_token ~= false and not l_done and tonumber(l_exp) > now
end
-- Ends one lease and frees its slot; a draining node whose last lease this was is DRAINED. The
-- record stays a while as a tombstone ('done' = how it ended), so a Release or Fail repeated
-- after a timeout answers as the first one did instead of "no such lease".
-- K: {leases, outbox}. Returns the node id, job id and scheduler (false when gone or ended).
local function lease_end(C, K, events, lease_id, now, how)
  local key = C.lease .. lease_id
  local l = redis.call('HMGET', key, 'node', 'job', 'sched', 'done')
  redis.call('ZREM', K.leases, lease_id)
  redis.call('ZREM', K.outbox, lease_id)
  if l[1] == false or l[4] then return false, false, false end
  redis.call('HSET', key, 'done', how)
  redis.call('PEXPIRE', key, C.margin)
  if l[2] and redis.call('GET', job_lease_key(C, l[2])) == lease_id then
    redis.call('DEL', job_lease_key(C, l[2]))
  end
  local node = l[1]
  if node then
    redis.call('SREM', C.nlease .. node, lease_id)
    if redis.call('EXISTS', C.node .. node) == 1 then
      local used = redis.call('HINCRBY', C.node .. node, 'used', -1)
      if used < 0 then
        used = 0
        redis.call('HSET', C.node .. node, 'used', 0)
      end
      if used == 0 and flagged(C, node, FLAG_DRAIN, now) then event(events, C.maxlen, EV_DRAINED, node, 'drained') end
    end
  end
  return node, l[2], l[3]
end
-- Drops every lease a node holds (it went offline, restarted or left): one LEASE_LOST event each.
-- K: {leases, outbox}.
local function leases_drop(C, K, events, id, reason)
  local now = now_ms()
  for _, lease_id in ipairs(redis.call('SMEMBERS', C.nlease .. id)) do
    local node, job = lease_end(C, K, events, lease_id, now, 'lost')
    if node then
      event(events, C.maxlen, EV_LEASE_LOST, id, reason .. ' lease=' .. lease_id .. ' job=' .. tostring(job))
    end
  end
  redis.call('DEL', C.nlease .. id)
  if redis.call('EXISTS', C.node .. id) == 1 then redis.call('HSET', C.node .. id, 'used', 0) end
end
-- Claims a slot of node `id` for `job`: a lease with a fencing token that never repeats, even
-- across a Redis that lost the counter (each token is at least the Redis clock in ms times 1024,
-- which only grows). The same step writes what a crash must not lose: the job's lease in this
-- partition (a repeated Match finds it) and an outbox entry, from which any server process
-- records the assignment on the job and tells its scheduler (assignments.py drains it), so no
-- assignment depends on the caller surviving its own reply.
--   outbox: <p>:outbox zset of lease ids not yet settled, score = when claimed (ms)
-- K: {leases, fence, outbox}. Returns lease_id, token.
local function claim(C, K, id, job, sched, expire, now)
  local token = math.max(tonumber(redis.call('GET', K.fence) or '0') + 1, now * 1024)
  local token_s = string.format('%d', token)
  redis.call('SET', K.fence, token_s)
  local lease_id = C.label .. '/' .. string.format('%x', token)
  local key = C.lease .. lease_id
  redis.call('HSET', key, 'job', job, 'node', id, 'token', token_s, 'exp', expire, 'sched', sched)
  redis.call('PEXPIREAT', key, expire + C.margin)
  redis.call('ZADD', K.leases, expire, lease_id)
  redis.call('SADD', C.nlease .. id, lease_id)
  if redis.call('PTTL', C.nlease .. id) < expire + C.margin - now then
    redis.call('PEXPIREAT', C.nlease .. id, expire + C.margin)
  end
  redis.call('SET', job_lease_key(C, job), lease_id, 'PXAT', expire + C.margin)
  redis.call('ZADD', K.outbox, now, lease_id)
  redis.call('PEXPIRE', K.outbox, C.ttl)
  redis.call('HINCRBY', C.node .. id, 'used', 1)
  idle_sync(C, id, now, true)
  return lease_id, token_s
end
-- The job's live lease in this partition, if it has one: lease_id, token, expire, node.
local function job_lease(C, job, now)
  local lease_id = redis.call('GET', job_lease_key(C, job))
  if not lease_id then return nil end
  local l = redis.call('HMGET', C.lease .. lease_id, 'token', 'exp', 'done', 'node', 'job')
  if not lease_live(l[1], l[2], l[3], now) or l[5] ~= job then return nil end
  return lease_id, l[1], tonumber(l[2]), l[4]
end
