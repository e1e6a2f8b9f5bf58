-- grant.lua: grant or revoke nodes' membership of one subcloud in its grant record, the truth
-- every registration reads (membership.lua then copies the change into each node's partition).
--
-- KEYS[1]  hash   <prefix>:grants:<subcloud>  node_id -> JSON {v, actor, reason, ms}; '#v' =
--                                             the last version handed out
-- ARGV[1]  'grant' or 'revoke'
-- ARGV[2]  JSON {actor, reason} kept with a grant
-- ARGV[3..] node ids
--
-- Returns {version, changed}: the version of this change (above every earlier one of this
-- subcloud, and at least the Redis clock in ms times 1024, so it keeps growing even after the
-- record was lost), and how many nodes it changed (granted anew, or revoked from a grant).
--
-- Why one script: the version must be taken and stamped on the grants in one step, or two
-- concurrent changes could stamp their grants in the opposite order of their versions.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = math.max(tonumber(redis.call('HGET', KEYS[1], '#v') or '0') + 1, now * 1024)
local v = string.format('%d', version)
redis.call('HSET', KEYS[1], '#v', v)
local changed = 0
if ARGV[1] == 'grant' then
  local meta = cjson.decode(ARGV[2])
  local entry = cjson.encode({v = v, actor = meta.actor, reason = meta.reason, ms = now})
  for i = 3, #ARGV do
    changed = changed + redis.call('HSET', KEYS[1], ARGV[i], entry)
  end
else
  for i = 3, #ARGV do
    changed = changed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return {v, changed}
