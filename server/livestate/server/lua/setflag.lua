-- setflag.lua: set, replace or clear one kind of flag on a node in its partition. The claim
-- script reads the same hash, so a Match that starts after this returns sees the change.
--
-- KEYS[1]  stream <p>:events  node events (capped)
-- ARGV[1..18] partition context (lib.lua)
-- ARGV[19] node_id
-- ARGV[20] FlagKind number
-- ARGV[21] 'set' or 'clear'
-- ARGV[22] expiry (ms since epoch), 0 = none
-- ARGV[23] window start (ms since epoch; MAINTENANCE), 0 = none
-- ARGV[24] meta: JSON {reason, message, actor, create_ms}
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
  if ARGV[23] ~= '0' then
    redis.call('HSET', key, kind .. ':from', ARGV[23])
  else
    redis.call('HDEL', key, kind .. ':from')
  end
  event(KEYS[1], C.maxlen, EV_FLAGGED, ARGV[19], 'kind=' .. kind)
else
  redis.call('HDEL', key, kind, kind .. ':meta', kind .. ':from')
  if had == 1 then event(KEYS[1], C.maxlen, EV_UNFLAGGED, ARGV[19], 'kind=' .. kind) end
end
ctl_keep(key, now, C.margin)
return had
