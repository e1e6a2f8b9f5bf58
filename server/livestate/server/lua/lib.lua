-- lib.lua: helpers prepended to every livestate script when it is loaded (scripts.py). It owns
-- no key: every key a helper touches is passed in by the calling script, or is a per-item key
-- made of a base from the key builder plus an id.
--
-- Partition scripts take the key bases of their partition as ARGV[1..8], in the order of
-- PartitionKeys.bases() in keys.py, and their own arguments from ARGV[9] on:
--   node   <p>:node:   + node_id             hash: the node record (records.py)
--   model  <p>:model:  + model               zset: nodes serving the model (listing index)
--   sub    <p>:sub:    + subcloud            zset: members of the subcloud (listing index)
--   idle   <p>:idle:   + model               zset: nodes with a free slot, score = idle since (ms)
--   idlev  <p>:idlev:  + class ':' model     zset: the same, by VRAM class (see vram_class)
--   lease  <p>:lease:  + lease_id            hash: one lease {job, node, token, exp}
--   nlease <p>:nlease: + node_id             set:  lease ids held by the node
--   ctl    <p>:ctl:    + node_id             hash: flags ('<kind>' = expiry ms, 0 = none;
--                                                  '<kind>:meta' = JSON) and failure score

local function bases()
  return {node = ARGV[1], model = ARGV[2], sub = ARGV[3], idle = ARGV[4], idlev = ARGV[5],
          lease = ARGV[6], nlease = ARGV[7], ctl = ARGV[8]}
end

-- NodeState and Liveness numbers as stored (node.proto).
local STATE_IDLE = '1'
local LIVE_OFFLINE = '3'
-- NodeEventType numbers (node.proto).
local EV_ONLINE, EV_SUSPECT, EV_OFFLINE, EV_FLAGGED, EV_LEASE_LOST = 1, 2, 3, 4, 6
-- FlagKind numbers (flag.proto).
local FLAG_QUARANTINE, FLAG_COOLDOWN, FLAG_MAINTENANCE = '4', '5', '6'

-- Milliseconds on the Redis clock. All server processes take "now" from Redis so they agree
-- without trusting each other's clocks; time is frozen for the script's whole run.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s, sep)
  local out = {}
  for item in string.gmatch(s or '', '[^' .. (sep or ',') .. ']+') do out[#out + 1] = item end
  return out
end

local function as_set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function event(stream, maxlen, kind, id, detail)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'node', id, 'detail', detail)
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

local function idle_keys(B, models, vram)
  local out, class = {}, vram_class(vram or 0)
  for _, m in ipairs(models) do
    out[#out + 1] = B.idle .. m
    out[#out + 1] = B.idlev .. class .. ':' .. m
  end
  return out
end

-- Takes a node out of every idle queue of the given record fields (models csv, vram).
local function idle_leave(B, id, models_csv, vram)
  for _, key in ipairs(idle_keys(B, split(models_csv), vram)) do redis.call('ZREM', key, id) end
end

-- Puts the node into its idle queues when it can take a job (reported IDLE, not OFFLINE, a free
-- slot), and takes it out otherwise. A node already queued keeps its place (idle since), unless
-- `requeue` moves it to the back (a multi-slot node that just took a job: fair rotation).
local function idle_sync(B, id, now, ttl, requeue)
  local r = redis.call('HMGET', B.node .. id, 'state', 'live', 'used', 'slots', 'models', 'vram')
  if r[1] == false then return end
  local keys = idle_keys(B, split(r[5]), r[6])
  if r[1] == STATE_IDLE and r[2] ~= LIVE_OFFLINE and tonumber(r[3] or '0') < tonumber(r[4] or '1') then
    for _, key in ipairs(keys) do
      if requeue then
        redis.call('ZADD', key, now, id)
      else
        redis.call('ZADD', key, 'NX', now, id)
      end
      redis.call('PEXPIRE', key, ttl)
    end
  else
    for _, key in ipairs(keys) do redis.call('ZREM', key, id) end
  end
end

-- Ends one lease and frees its slot. Returns the node id and job id (false when gone).
local function lease_end(B, leases, lease_id)
  local l = redis.call('HMGET', B.lease .. lease_id, 'node', 'job')
  redis.call('DEL', B.lease .. lease_id)
  redis.call('ZREM', leases, lease_id)
  local node = l[1]
  if node then
    redis.call('SREM', B.nlease .. node, lease_id)
    if redis.call('EXISTS', B.node .. node) == 1 and redis.call('HINCRBY', B.node .. node, 'used', -1) < 0 then
      redis.call('HSET', B.node .. node, 'used', 0)
    end
  end
  return node, l[2]
end

-- Drops every lease a node holds (it went offline, restarted or left): one LEASE_LOST event each.
local function leases_drop(B, leases, events, maxlen, id, reason)
  for _, lease_id in ipairs(redis.call('SMEMBERS', B.nlease .. id)) do
    local _, job = lease_end(B, leases, lease_id)
    event(events, maxlen, EV_LEASE_LOST, id, reason .. ' lease=' .. lease_id .. ' job=' .. tostring(job))
  end
  redis.call('DEL', B.nlease .. id)
  if redis.call('EXISTS', B.node .. id) == 1 then redis.call('HSET', B.node .. id, 'used', 0) end
end

-- True when a flag that keeps the node out of matching is in force: any kind but MAINTENANCE
-- unexpired, and MAINTENANCE only inside its window ('6:from' <= now).
local function blocked(B, id, now)
  local raw = redis.call('HGETALL', B.ctl .. id)
  if #raw == 0 then return false end
  local ctl = {}
  for i = 1, #raw, 2 do ctl[raw[i]] = raw[i + 1] end
  for kind, exp in pairs(ctl) do
    if string.match(kind, '^%d+$') then
      local e = tonumber(exp)
      if e == 0 or e > now then
        if kind ~= FLAG_MAINTENANCE or tonumber(ctl[kind .. ':from'] or '0') <= now then return true end
      end
    end
  end
  return false
end

-- Removes a node and every index entry of it from its partition.
--   sets: partition-wide zsets holding node ids (alive, suspect, offline, nodes).
local function remove_node(B, id, sets)
  local key = B.node .. id
  local rec = redis.call('HMGET', key, 'models', 'subs', 'vram')
  for _, m in ipairs(split(rec[1])) do redis.call('ZREM', B.model .. m, id) end
  for _, s in ipairs(split(rec[2])) do redis.call('ZREM', B.sub .. s, id) end
  idle_leave(B, id, rec[1], rec[3])
  for _, set in ipairs(sets) do redis.call('ZREM', set, id) end
  redis.call('DEL', key)
end
