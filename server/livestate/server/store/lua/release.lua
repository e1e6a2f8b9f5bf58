-- release.lua: a job is done (Release) or failed (Fail) on its node: end the lease, free the slot;
-- for a failure also raise the node's decaying failure score and flag it past the thresholds.
--
-- KEYS[1]  zset   <p>:leases  live leases, score = expiry (ms)
-- KEYS[2]  stream <p>:events  node events (capped)
-- KEYS[3]  string <p>:fence   fencing token counter
-- KEYS[4]  hash   <p>:meta    hearing floor (see hearing in lib/hearing.lua)
-- KEYS[5]  zset   <p>:wexp    waiting jobs, score = when they stop waiting (ms)
-- KEYS[6]  zset   <p>:flagexp flags with a TTL (see flag_expiry in lib/control.lua)
-- KEYS[7]  zset   <p>:outbox  assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] lease_id
-- ARGV[20] fencing token the caller holds
-- ARGV[21] 1 = the job failed (score the node), 0 = it finished
-- ARGV[22] failure score half-life (ms)
-- ARGV[23] COOLDOWN threshold (score)
-- ARGV[24] COOLDOWN TTL (ms)
-- ARGV[25] QUARANTINE threshold (score)
-- ARGV[26] QUARANTINE TTL (ms)
-- ARGV[27] control record TTL (ms): how long flags and score outlive their last change
-- ARGV[28] failure reason
-- ARGV[29] how long the job's tried nodes are remembered (ms)
--
-- Returns {code, job_id, node_id, scheduler, score, flag, assignment...}: code 0 = done, 1 = no
-- such lease (never issued, or expired), 2 = the token is not the lease's, 3 = this lease
-- already ended by Release or Fail (a repeated call: answered as done, nothing changes); score
-- is the node's failure score after this failure (a decimal string), flag the FlagKind newly
-- set (0 = none); then the waiting jobs the freed slot went to (see serve_waiting in lib/waiting.lua).
--
-- Idempotent: an ended lease stays as a tombstone for a while (see lease_end), so a Release
-- retried after a timeout, whose first copy did run, is told it is done, not "no such lease".

local C = context()
local K = {leases = KEYS[1], fence = KEYS[3], meta = KEYS[4], wexp = KEYS[5], outbox = KEYS[7]}
local now = now_ms()
local l = redis.call('HMGET', C.lease .. ARGV[19], 'token', 'exp', 'done', 'job', 'node', 'sched')
if l[1] == false then return {1, '', '', '', '0', 0} end
if l[1] ~= ARGV[20] then return {2, '', '', '', '0', 0} end
if l[3] == 'released' or l[3] == 'failed' then return {3, l[4], l[5], l[6] or '', '0', 0} end
if l[3] or tonumber(l[2]) <= now then return {1, '', '', '', '0', 0} end

local node, job, sched = lease_end(C, K, KEYS[2], ARGV[19], now, ARGV[21] == '1' and 'failed' or 'released')
local score, flag = 0, 0
if ARGV[21] == '1' then
  redis.call('SADD', tried_key(C, job), node)
  redis.call('PEXPIRE', tried_key(C, job), ARGV[29])
  local ctl = C.ctl .. node
  local c = redis.call('HMGET', ctl, 'score', 'score_t', FLAG_COOLDOWN, FLAG_QUARANTINE)
  local prev, since = tonumber(c[1] or '0'), tonumber(c[2] or now)
  score = prev * math.pow(2, -(now - since) / tonumber(ARGV[22])) + 1
  redis.call('HSET', ctl, 'score', string.format('%.6f', score), 'score_t', now)
  local function raise(kind, threshold, ttl, current)
    local active = current and (tonumber(current) == 0 or tonumber(current) > now)
    if score >= tonumber(threshold) and not active then
      local meta = cjson.encode({reason = 'failure_score', actor = 'livestate', create_ms = now,
        message = string.format('failure score %.2f after: %s', score, ARGV[28])})
      redis.call('HSET', ctl, kind, now + tonumber(ttl), kind .. ':meta', meta)
      flag_expiry(KEYS[6], node, kind, now + tonumber(ttl))
      event(KEYS[2], C.maxlen, EV_FLAGGED, node, 'kind=' .. kind .. ' reason=failure_score')
      flag = tonumber(kind)
    end
  end
  raise(FLAG_QUARANTINE, ARGV[25], ARGV[26], c[4])
  if flag == 0 then raise(FLAG_COOLDOWN, ARGV[23], ARGV[24], c[3]) end
  ctl_keep(ctl, now, C.margin, tonumber(ARGV[27]))
end
idle_sync(C, node, now, false)
return append({0, job, node, sched or '', string.format('%.6f', score), flag}, serve_waiting(C, K, node, now))
