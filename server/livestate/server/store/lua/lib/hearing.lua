-- lib/hearing.lua: how long a node's silence counts (the liveness rule; records.py mirrors it).

-- Hearing: how long a node's silence counts. No node counts as silent for longer than the Redis
-- state has existed (the epoch), nor for the time nobody could hear it: when no sweep has run
-- for longer than `gap` ms (Redis was frozen or unreachable, or every server was down), that
-- stretch is an outage and is left out of every node's silence. One outage is forgiven per
-- `offline_after` at most, so sweeps that merely lag behind never freeze liveness: a dead node
-- still turns SUSPECT and OFFLINE, only later by the length of one outage.
--   meta: <p>:meta hash {pulse = last sweep (ms), ostart, oend = the last outage forgiven (ms)}
-- The first script to notice an outage records it, so every reader agrees on it afterwards.
-- records.py mirrors this rule for reads (Hearing); test_liveness checks that they agree.
local function hearing(meta, now, C)
  local m = redis.call('HMGET', meta, 'pulse', 'ostart', 'oend')
  local H = {epoch = C.epoch, ostart = tonumber(m[2] or '0'), oend = tonumber(m[3] or '0')}
  if m[1] ~= false and now - tonumber(m[1]) > C.gap and now - H.oend > C.offline_after then
    H.ostart, H.oend = tonumber(m[1]), now
    redis.call('HSET', meta, 'ostart', H.ostart, 'oend', H.oend, 'pulse', now)
  end
  return H
end
-- How long node last seen at `seen` has been silent, outage and epoch left out.
local function silence(H, seen, now)
  seen = math.max(tonumber(seen), H.epoch)
  if seen >= H.oend then return now - seen end
  if seen >= H.ostart then return now - H.oend end
  return (H.ostart - seen) + (now - H.oend)
end
-- The last-seen score below which every node has been silent longer than `limit` ms (silence
-- only shrinks as `seen` grows, so this is one ZRANGEBYSCORE bound), or nil when none has.
local function silent_before(H, now, limit)
  local since_outage = now - H.oend
  local cut = now - limit
  if since_outage <= limit then cut = H.ostart - (limit - since_outage) end
  if H.epoch >= cut then return nil end
  return cut
end
