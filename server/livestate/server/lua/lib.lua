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

-- The earliest time from which silence counts against a partition's nodes: the epoch (state
-- younger than that cannot have heard them), the partition's recorded floor, or now when no sweep
-- has run for longer than `gap` ms (Redis was frozen or unreachable, or every server was down:
-- nobody could hear the nodes, so their silence proves nothing).
--   meta: <p>:meta hash {pulse = last sweep (ms), floor = ms}
-- Returns floor, gap_seen (true when the gap rule applied).
local function hearing_floor(meta, now, epoch, gap)
  local m = redis.call('HMGET', meta, 'pulse', 'floor')
  local floor = math.max(tonumber(epoch), tonumber(m[2] or '0'))
  if m[1] ~= false and now - tonumber(m[1]) > tonumber(gap) then
    return now, true
  end
  return floor, false
end
