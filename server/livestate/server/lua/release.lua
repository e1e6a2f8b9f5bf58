-- release.lua: a job is done (Release) or failed (Fail) on its node: end the lease, free the slot;
-- for a failure also raise the node's decaying failure score and flag it past the thresholds.
--
-- KEYS[1]  zset   <p>:leases  live leases, score = expiry (ms)
-- KEYS[2]  stream <p>:events  node events (capped)
-- ARGV[1..8] key bases (lib.lua)
-- ARGV[9]  lease_id
-- ARGV[10] fencing token the caller holds
-- ARGV[11] idle queue TTL (ms)
-- ARGV[12] 1 = the job failed (score the node), 0 = it finished
-- ARGV[13] failure score half-life (ms)
-- ARGV[14] COOLDOWN threshold (score)
-- ARGV[15] COOLDOWN TTL (ms)
-- ARGV[16] QUARANTINE threshold (score)
-- ARGV[17] QUARANTINE TTL (ms)
-- ARGV[18] control record TTL (ms): how long flags and score outlive their last change
-- ARGV[19] events stream max length (approximate)
-- ARGV[20] failure reason
--
-- Returns {code, job_id, node_id, score, flag}: code 0 = done, 1 = no such lease (never issued,
-- released, or expired), 2 = the token is not the lease's; score is the node's failure score
-- after this failure (a decimal string), flag the FlagKind newly set (0 = none).

local B = bases()
local now = now_ms()
local l = redis.call('HMGET', B.lease .. ARGV[9], 'token', 'exp')
if l[1] == false or tonumber(l[2]) <= now then return {1, '', '', '0', 0} end
if l[1] ~= ARGV[10] then return {2, '', '', '0', 0} end

local node, job = lease_end(B, KEYS[1], ARGV[9])
local score, flag = 0, 0
if ARGV[12] == '1' then
  local ctl = B.ctl .. node
  local c = redis.call('HMGET', ctl, 'score', 'score_t', FLAG_COOLDOWN, FLAG_QUARANTINE)
  local prev, since = tonumber(c[1] or '0'), tonumber(c[2] or now)
  score = prev * math.pow(2, -(now - since) / tonumber(ARGV[13])) + 1
  redis.call('HSET', ctl, 'score', string.format('%.6f', score), 'score_t', now)
  local function raise(kind, threshold, ttl, current)
    local active = current and (tonumber(current) == 0 or tonumber(current) > now)
    if score >= tonumber(threshold) and not active then
      local meta = cjson.encode({reason = 'failure_score', actor = 'livestate', create_ms = now,
        message = string.format('failure score %.2f after: %s', score, ARGV[20])})
      redis.call('HSET', ctl, kind, now + tonumber(ttl), kind .. ':meta', meta)
      event(KEYS[2], ARGV[19], EV_FLAGGED, node, 'kind=' .. kind .. ' reason=failure_score')
      flag = tonumber(kind)
    end
  end
  raise(FLAG_QUARANTINE, ARGV[16], ARGV[17], c[4])
  if flag == 0 then raise(FLAG_COOLDOWN, ARGV[14], ARGV[15], c[3]) end
  redis.call('PEXPIRE', ctl, ARGV[18])
end
idle_sync(B, node, now, ARGV[11], false)
return {0, job, node, string.format('%.6f', score), flag}
