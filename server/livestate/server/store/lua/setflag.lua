-- setflag.lua: set, replace or clear one kind of flag on a node in its partition. The claim
-- script reads the same hash, so a Match that starts after this returns sees the change.
--
-- KEYS[1]  stream <p>:events  node events (capped)
-- KEYS[2]  zset   <p>:drains  draining nodes with a deadline, score = the deadline (ms)
-- KEYS[3]  zset   <p>:flagexp flags with a TTL, "<node_id>|<kind>", score = expiry (ms)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] node_id
-- ARGV[20] FlagKind number
-- ARGV[21] 'set' or 'clear'
-- ARGV[22] expiry (ms since epoch), 0 = none
-- ARGV[23] window start (ms since epoch; MAINTENANCE), 0 = none
-- ARGV[24] meta: JSON {reason, message, actor, create_ms}
-- ARGV[25] DRAIN only: when leases still running are revoked (ms since epoch), 0 = never
--
-- Returns 1 when a flag of that kind was in force before, 0 otherwise.

local C = context()
local now = now_ms()
local key = C.ctl .. ARGV[19]
local kind = ARGV[20]
local prev = redis.call('HGET', key, kind)
local had = (prev and (tonumber(prev) == 0 or tonumber(prev) > now)) and 1 or 0

if ARGV[21] == 'set' then
  redis.call('HSET', key, kind, ARGV[22], kind .. ':meta', ARGV[24])
  flag_expiry(KEYS[3], ARGV[19], kind, ARGV[22])
  if ARGV[23] ~= '0' then
    redis.call('HSET', key, kind .. ':from', ARGV[23])
  else
    redis.call('HDEL', key, kind .. ':from')
  end
  event(KEYS[1], C.maxlen, EV_FLAGGED, ARGV[19], 'kind=' .. kind)
  if kind == FLAG_DRAIN then
    -- The deadline is kept in the control hash too, so it moves with the node (register.lua).
    if ARGV[25] ~= '0' then
      redis.call('ZADD', KEYS[2], ARGV[25], ARGV[19])
      redis.call('HSET', key, kind .. ':until', ARGV[25])
    else
      redis.call('ZREM', KEYS[2], ARGV[19])
      redis.call('HDEL', key, kind .. ':until')
    end
    -- Nothing running: drained already.
    if tonumber(redis.call('HGET', C.node .. ARGV[19], 'used') or '0') == 0 then
      event(KEYS[1], C.maxlen, EV_DRAINED, ARGV[19], 'drained')
    end
  end
else
  redis.call('HDEL', key, kind, kind .. ':meta', kind .. ':from', kind .. ':until')
  flag_expiry(KEYS[3], ARGV[19], kind, 0)
  if kind == FLAG_DRAIN then redis.call('ZREM', KEYS[2], ARGV[19]) end
  if had == 1 then event(KEYS[1], C.maxlen, EV_UNFLAGGED, ARGV[19], 'kind=' .. kind) end
end
ctl_keep(key, now, C.margin)
return had
