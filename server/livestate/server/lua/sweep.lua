-- sweep.lua: move one partition's nodes along ONLINE -> SUSPECT -> OFFLINE -> forgotten by their
-- heartbeat deadlines. Bounded (at most ARGV[5] nodes per stage per call) and idempotent, so any
-- number of server processes may run it at once: each stage only moves nodes whose deadline has
-- passed, and a node moved by one run is not in the source set for the next.
--
-- KEYS[1]  zset   <p>:alive      ONLINE nodes, score = last seen (ms)
-- KEYS[2]  zset   <p>:suspect    SUSPECT nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:offline    OFFLINE nodes, score = when they went offline (ms)
-- KEYS[4]  zset   <p>:nodes      every retained node, score 0
-- KEYS[5]  set    <p>:models     models with an index in this partition
-- KEYS[6]  set    <p>:subclouds  subclouds with an index in this partition
-- KEYS[7]  stream <p>:events     node events (capped)
-- KEYS[8]  hash   <p>:meta       {pulse = last sweep (ms), floor = hearing floor (ms)}
-- ARGV[1]  suspect_after (ms)
-- ARGV[2]  offline_after (ms)
-- ARGV[3]  retention (ms): how long an OFFLINE node stays readable
-- ARGV[4]  epoch (ms): when the current Redis state began. No node counts as silent for longer
--          than the state has existed, so a Redis restart never declares nodes dead by itself;
--          likewise after a gap in sweeping (ARGV[12], see hearing_floor in lib.lua).
-- ARGV[5]  limit per stage
-- ARGV[6]  node record base "<p>:node:"
-- ARGV[7]  model index base "<p>:model:"
-- ARGV[8]  subcloud index base "<p>:sub:"
-- ARGV[9]  events stream max length (approximate)
-- ARGV[10] partition key TTL (ms), refreshed on every partition-wide key; 0 = skip the refresh
-- ARGV[11] TTL (ms) given to a record when it goes OFFLINE (retention plus a margin, so this
--          sweep, not eviction, forgets it and its index entries)
-- ARGV[12] sweep gap (ms): a partition unswept for longer was not being heard
--
-- Returns {suspected, offlined, more, forgotten_id...}: more = 1 when a stage hit the limit
-- (call again); forgotten ids are for the caller to drop their global locators.

local now = now_ms()
local limit = tonumber(ARGV[5])
local floor, gap_seen = hearing_floor(KEYS[8], now, ARGV[4], ARGV[12])
if gap_seen then redis.call('HSET', KEYS[8], 'floor', floor) end
redis.call('HSET', KEYS[8], 'pulse', now)
local sets = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
local suspected, offlined, more = 0, 0, 0
local forgotten = {}

local function event(kind, id, detail)
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[9], '*', 'type', kind, 'node', id, 'detail', detail)
end

-- ONLINE -> SUSPECT
local cutoff = now - tonumber(ARGV[1])
if floor < cutoff then
  local hits = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #hits, 2 do
    local id = hits[i]
    local key = ARGV[6] .. id
    redis.call('ZREM', KEYS[1], id)
    if redis.call('EXISTS', key) == 1 then
      redis.call('ZADD', KEYS[2], hits[i + 1], id)
      redis.call('HSET', key, 'live', 2)
      event(2, id, 'missed deadline')
      suspected = suspected + 1
    else
      redis.call('ZREM', KEYS[4], id)
    end
  end
  if #hits == 2 * limit then more = 1 end
end

-- SUSPECT -> OFFLINE
cutoff = now - tonumber(ARGV[2])
if floor < cutoff then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local key = ARGV[6] .. id
    redis.call('ZREM', KEYS[2], id)
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'live', 3, 'gone', now, 'why', 'silent')
      redis.call('PEXPIRE', key, ARGV[11])
      redis.call('ZADD', KEYS[3], now, id)
      event(3, id, 'silent')
      offlined = offlined + 1
    else
      redis.call('ZREM', KEYS[4], id)
    end
  end
  if #ids == limit then more = 1 end
end

-- OFFLINE past retention -> forgotten
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[3])), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  remove_node(ARGV[6] .. id, id, sets, ARGV[7], ARGV[8])
  forgotten[#forgotten + 1] = id
end
if #ids == limit then more = 1 end

-- Abandoned partitions evict themselves: the partition-wide keys live only as long as a sweeper
-- keeps refreshing them. Index sets that emptied are dropped from the catalogues here too.
if tonumber(ARGV[10]) > 0 then
  for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], ARGV[10]) end
  for _, pair in ipairs({{KEYS[5], ARGV[7]}, {KEYS[6], ARGV[8]}}) do
    for _, name in ipairs(redis.call('SMEMBERS', pair[1])) do
      if redis.call('PEXPIRE', pair[2] .. name, ARGV[10]) == 0 then
        redis.call('SREM', pair[1], name)
      end
    end
  end
end

local out = {suspected, offlined, more}
for _, id in ipairs(forgotten) do out[#out + 1] = id end
return out
