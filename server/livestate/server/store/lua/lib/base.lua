-- lib/base.lua: the partition context, stored numbers, the Redis clock and small helpers.
--
-- The lib/*.lua files hold the helpers livestate scripts share, by concern, in the order
-- scripts.py reads them: a helper uses only helpers defined before it. A script is loaded
-- with only the helpers it uses (prelude.py). No helper owns a key: every key a helper
-- touches is passed in by the calling script, or is a per-item key made of a base from
-- the key builder plus an id.
--
-- Partition scripts take their partition's context as ARGV[1..18] (Runtime.context in
-- runtime.py builds it), and their own arguments from ARGV[19] on:
--   1 node   <p>:node:   + node_id        hash: the node record (records.py)
--   2 model  <p>:model:  + model          zset: nodes serving the model (listing index)
--   3 sub    <p>:sub:    + subcloud       zset: members of the subcloud (listing index)
--   4 idle   <p>:idle:   + model          zset: nodes with a free slot, score = idle since (ms)
--   5 idlev  <p>:idlev:  + class ':' model zset: the same, by VRAM class (see vram_class)
--   6 lease  <p>:lease:  + lease_id       hash: one lease {job, node, token, exp, sched}
--   7 nlease <p>:nlease: + node_id        set:  lease ids held by the node
--   8 ctl    <p>:ctl:    + node_id        hash: flags ('<kind>' = expiry ms, 0 = none;
--                                              '<kind>:meta' = JSON) and failure score
--   9 wait   <p>:wait:   + model          zset: jobs waiting for the model, best first
--  10 wjob   <p>:wjob:   + job_id         hash: a waiting job's requirements
--  11 label  the partition label (lease ids start with it)
--  12 suspect_after (ms)   13 offline_after (ms)   14 epoch (ms)   15 sweep gap (ms)
--  16 ttl: record and index TTL (ms)   17 margin: how long a lease record outlives its expiry
--  18 maxlen: events stream cap (approximate)

local function context()
  return {node = ARGV[1], model = ARGV[2], sub = ARGV[3], idle = ARGV[4], idlev = ARGV[5],
          lease = ARGV[6], nlease = ARGV[7], ctl = ARGV[8], wait = ARGV[9], wjob = ARGV[10],
          label = ARGV[11], suspect_after = tonumber(ARGV[12]), offline_after = tonumber(ARGV[13]),
          epoch = tonumber(ARGV[14]), gap = tonumber(ARGV[15]), ttl = tonumber(ARGV[16]),
          margin = tonumber(ARGV[17]), maxlen = ARGV[18]}
end
-- NodeState and Liveness numbers as stored (node.proto).
local STATE_IDLE = '1'
local LIVE_OFFLINE = '3'
-- NodeEventType numbers (node.proto).
local EV_ONLINE, EV_SUSPECT, EV_OFFLINE, EV_FLAGGED, EV_LEASE_LOST = 1, 2, 3, 4, 6
-- FlagKind numbers (flag.proto).
local FLAG_PAUSE, FLAG_QUARANTINE, FLAG_COOLDOWN, FLAG_MAINTENANCE = '1', '4', '5', '6'
local FLAG_DRAIN = '7'
local EV_UNFLAGGED, EV_DRAINED = 5, 7
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
local function append(list, more)
  for _, v in ipairs(more) do list[#list + 1] = v end
  return list
end
local function event(stream, maxlen, kind, id, detail)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'node', id, 'detail', detail)
end
