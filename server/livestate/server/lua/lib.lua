-- lib.lua: helpers prepended to every livestate script when it is loaded (scripts.py). It touches
-- no key of its own: every key a helper writes is passed in by the calling script.

-- Milliseconds on the Redis clock. All server processes take "now" from Redis so they agree
-- without trusting each other's clocks; time is frozen for the script's whole run.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s)
  local out = {}
  for item in string.gmatch(s or '', '[^,]+') do out[#out + 1] = item end
  return out
end

-- Removes a node and every index entry of it from its partition.
--   key: the node record; id: node_id; sets: {alive, suspect, offline, nodes};
--   model_base/sub_base: index key bases from the key builder.
local function remove_node(key, id, sets, model_base, sub_base)
  local rec = redis.call('HMGET', key, 'models', 'subs')
  for _, m in ipairs(split(rec[1])) do redis.call('ZREM', model_base .. m, id) end
  for _, s in ipairs(split(rec[2])) do redis.call('ZREM', sub_base .. s, id) end
  for _, set in ipairs(sets) do redis.call('ZREM', set, id) end
  redis.call('DEL', key)
end
