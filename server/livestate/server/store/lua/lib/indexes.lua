-- lib/indexes.lua: the idle queues and the per-node indexes.

-- VRAM class of a node: floor(log2(GiB)), so "at least N MiB" reads only the classes that can
-- hold such a node instead of walking every smaller one first.
local function vram_class(mb)
  local v, c = math.floor(tonumber(mb) / 1024), 0
  while v >= 2 do
    v = math.floor(v / 2)
    c = c + 1
  end
  return c
end
local function idle_keys(C, models, vram)
  local out, class = {}, vram_class(vram or 0)
  for _, m in ipairs(models) do
    out[#out + 1] = C.idle .. m
    out[#out + 1] = C.idlev .. class .. ':' .. m
  end
  return out
end
-- Takes a node out of every idle queue of the given record fields (models csv, vram).
local function idle_leave(C, id, models_csv, vram)
  for _, key in ipairs(idle_keys(C, split(models_csv), vram)) do redis.call('ZREM', key, id) end
end
-- Slots in use: leased ones plus 'ghost' ones, jobs the agent reported running when it
-- registered after the server had lost their leases (see register.lua); beats retire ghosts as
-- the agent reports those jobs finished.
local function occupied(used, ghost)
  return tonumber(used or '0') + tonumber(ghost or '0')
end
-- Puts the node into its idle queues when it can take a job (reported IDLE, not OFFLINE, a free
-- slot), and takes it out otherwise. A node already queued keeps its place (idle since), unless
-- `requeue` moves it to the back (a multi-slot node that just took a job: fair rotation).
local function idle_sync(C, id, now, requeue)
  local r = redis.call('HMGET', C.node .. id, 'state', 'live', 'used', 'slots', 'models', 'vram', 'ghost')
  if r[1] == false then return end
  local keys = idle_keys(C, split(r[5]), r[6])
  if r[1] == STATE_IDLE and r[2] ~= LIVE_OFFLINE and occupied(r[3], r[7]) < tonumber(r[4] or '1') then
    for _, key in ipairs(keys) do
      if requeue then
        redis.call('ZADD', key, now, id)
      else
        redis.call('ZADD', key, 'NX', now, id)
      end
      redis.call('PEXPIRE', key, C.ttl)
    end
  else
    for _, key in ipairs(keys) do redis.call('ZREM', key, id) end
  end
end
-- Removes a node and every index entry of it from its partition.
--   sets: partition-wide zsets holding node ids (alive, suspect, offline, nodes).
local function remove_node(C, id, sets)
  local key = C.node .. id
  local rec = redis.call('HMGET', key, 'models', 'subs', 'vram')
  for _, m in ipairs(split(rec[1])) do redis.call('ZREM', C.model .. m, id) end
  for _, s in ipairs(split(rec[2])) do redis.call('ZREM', C.sub .. s, id) end
  idle_leave(C, id, rec[1], rec[3])
  for _, set in ipairs(sets) do redis.call('ZREM', set, id) end
  redis.call('DEL', key)
end
