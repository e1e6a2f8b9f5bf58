-- beat.lua: one heartbeat of one node, atomically.
--
-- KEYS[1]  hash   <p>:node:<node_id>  the node record
-- KEYS[2]  zset   <p>:alive           ONLINE nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:suspect         SUSPECT nodes, score = last seen (ms)
-- KEYS[4]  stream <p>:events          node events (capped)
-- KEYS[5]  hash   <p>:meta            partition sweep pulse and last outage (see hearing in lib/hearing.lua)
-- KEYS[6]  zset   <p>:leases          live leases, score = expiry (ms)
-- KEYS[7]  string <p>:fence           fencing token counter
-- KEYS[8]  zset   <p>:wexp            waiting jobs, score = when they stop waiting (ms)
-- KEYS[9]  zset   <p>:outbox          assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua); its epoch is the one the server knows: records
--          stamped with an older one are stale
-- ARGV[19] node_id
-- ARGV[20] boot_id
-- ARGV[21] seq (0 = the agent does not number its beats: always applied)
-- ARGV[22] state (NodeState number)
-- ARGV[23] free VRAM (MiB)
-- ARGV[24] running jobs
-- ARGV[25] 1 = paused by its operator, 0 = not
--
-- Returns {code, now_ms, paused, n, notice_1..notice_n, assignment...}:
--   0 = applied
--   1 = resync: unknown node, another boot, a stale epoch, or OFFLINE (register again)
--   2 = acknowledged but not applied: seq not newer than the last applied one
--   3 = free VRAM above the registered total (bad input; nothing written)
-- paused and the notices are what the node is told of its flags (see notices in lib/control.lua); then
-- the waiting jobs the node was handed when it turned IDLE (see serve_waiting in lib/waiting.lua).
--
-- Why a script: the boot/epoch/seq checks and the deadline move must be one step, or a beat of
-- a dead boot could revive a record that a re-registration or the sweeper just replaced; and a
-- state change moves the node in or out of the idle queues (and to waiting jobs) in the same step.
-- Slots are reconciled here too: a lease record that vanished without being ended (evicted, or
-- expired before a sweep reached it) gives its slot back, and ghost slots (see register.lua)
-- retire as the agent reports its jobs finished.

local C = context()
local K = {leases = KEYS[6], fence = KEYS[7], meta = KEYS[5], wexp = KEYS[8], outbox = KEYS[9]}
local now = now_ms()
local id = ARGV[19]

local rec = redis.call('HMGET', KEYS[1], 'boot', 'epoch', 'seq', 'live', 'vram', 'seen', 'state', 'opause',
  'used', 'ghost')
if rec[1] == false or rec[1] ~= ARGV[20] or tonumber(rec[2]) < C.epoch or rec[4] == LIVE_OFFLINE then
  return {1, now}
end
-- Past its offline deadline the node has lost its leases, whether or not a sweep has recorded
-- that yet; it must register again rather than be revived with state the server dropped.
local H = hearing(KEYS[5], now, C)
if silence(H, rec[6], now) > C.offline_after then
  return {1, now}
end
local vram = tonumber(rec[5] or '0')
if vram > 0 and tonumber(ARGV[23]) > vram then
  return {3, now}
end

-- Slots: count the leases that still have a record (ended or expired ones the sweep has not
-- reached yet still count, so they are ended there, with their events); retire ghosts the agent
-- no longer reports.
local freed = false
local used, ghost = tonumber(rec[9] or '0'), tonumber(rec[10] or '0')
if used > 0 then
  local held = 0
  for _, lease_id in ipairs(redis.call('SMEMBERS', C.nlease .. id)) do
    local l = redis.call('HMGET', C.lease .. lease_id, 'token', 'done')
    if l[1] == false or l[2] then
      redis.call('SREM', C.nlease .. id, lease_id)
    else
      held = held + 1
    end
  end
  if held < used then
    redis.call('HSET', KEYS[1], 'used', held)
    used, freed = held, true
  end
end
if ghost > 0 then
  local still = math.min(ghost, math.max(0, tonumber(ARGV[24]) - used))
  if still < ghost then
    redis.call('HSET', KEYS[1], 'ghost', still)
    freed = true
  end
end

local code = 0
local assigned = {}
local seq = tonumber(ARGV[21])
if seq == 0 or seq > tonumber(rec[3]) then
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1, 'state', ARGV[22], 'vfree', ARGV[23],
    'jobs', ARGV[24], 'seq', ARGV[21] ~= '0' and ARGV[21] or rec[3], 'opause', ARGV[25])
  if rec[7] ~= ARGV[22] or freed then idle_sync(C, id, now, false) end
  if (rec[7] ~= ARGV[22] or (rec[8] or '0') ~= ARGV[25] or freed) and ARGV[22] == STATE_IDLE and ARGV[25] == '0' then
    assigned = serve_waiting(C, K, id, now)
  end
else
  -- An out-of-order beat still proves the node is alive; it just must not roll state back.
  code = 2
  redis.call('HSET', KEYS[1], 'seen', now, 'live', 1)
  if freed then idle_sync(C, id, now, false) end
end
redis.call('PEXPIRE', KEYS[1], C.ttl)
redis.call('ZADD', KEYS[2], now, id)
if rec[4] == '2' then
  redis.call('ZREM', KEYS[3], id)
  event(KEYS[4], C.maxlen, EV_ONLINE, id, 'recovered')
end
local paused, told = notices(C, id, now)
local out = append({code, now, paused, #told}, told)
return append(out, assigned)
