-- sweep.lua: move one partition's nodes along ONLINE -> SUSPECT -> OFFLINE -> forgotten by their
-- heartbeat deadlines, end leases past their expiry, and drop waiting jobs past theirs. Bounded
-- (at most ARGV[21] items per stage per call) and idempotent, so any number of server processes
-- may run it at once: each stage only moves what is due, and what one run moved is not in the
-- source set for the next.
--
-- KEYS[1]  zset   <p>:alive      ONLINE nodes, score = last seen (ms)
-- KEYS[2]  zset   <p>:suspect    SUSPECT nodes, score = last seen (ms)
-- KEYS[3]  zset   <p>:offline    OFFLINE nodes, score = when they went offline (ms)
-- KEYS[4]  zset   <p>:nodes      every retained node, score 0
-- KEYS[5]  set    <p>:models     models with an index in this partition
-- KEYS[6]  set    <p>:subclouds  subclouds with an index in this partition
-- KEYS[7]  stream <p>:events     node events (capped)
-- KEYS[8]  hash   <p>:meta       {pulse = last sweep (ms), ostart, oend = last outage (ms)}
-- KEYS[9]  zset   <p>:leases     live leases, score = expiry (ms)
-- KEYS[10] string <p>:fence      fencing token counter
-- KEYS[11] zset   <p>:wexp       waiting jobs, score = when they stop waiting (ms)
-- KEYS[12] set    <p>:wmodels    models that have had waiting jobs
-- KEYS[13] zset   <p>:drains     draining nodes with a deadline, score = the deadline (ms)
-- KEYS[14] zset   <p>:flagexp    flags with a TTL, "<node_id>|<kind>", score = expiry (ms)
-- KEYS[15] zset   <p>:outbox     assignments not yet settled (see claim in lib/leases.lua)
-- ARGV[1..18] partition context (lib/base.lua). Its epoch: no node counts as silent for longer than
--          the Redis state has existed, so a Redis restart never declares nodes dead by itself;
--          likewise for an outage (see hearing).
-- ARGV[19] retention (ms): how long an OFFLINE node stays readable
-- ARGV[20] TTL (ms) given to a record when it goes OFFLINE (retention plus a margin, so this
--          sweep, not eviction, forgets it and its index entries)
-- ARGV[21] limit per stage
-- ARGV[22] 1 = refresh the TTL of every partition-wide key (done every few sweeps)
-- ARGV[23] outbox age (ms) past which an unsettled assignment is handed back to be settled
--
-- Returns {suspected, offlined, expired, more, empty, n_forgotten, forgotten_id...,
--          n_assigned, assignment..., unsettled...}:
-- more = 1 when a stage hit the limit (call again); empty = 1 when the partition holds no node,
-- lease, waiting job or unsettled assignment (the caller may drop it from the catalogue);
-- forgotten ids are for the caller to drop their global locators; assignments are waiting jobs
-- handed the slots of expired leases; unsettled are outbox entries older than ARGV[23] whose
-- lease still lives (their caller never settled them: a crash, a timeout), both as sextuples
-- (see serve_waiting in lib/waiting.lua).

local C = context()
local K = {leases = KEYS[9], fence = KEYS[10], meta = KEYS[8], wexp = KEYS[11], outbox = KEYS[15]}
local now = now_ms()
local limit = tonumber(ARGV[21])
local H = hearing(KEYS[8], now, C)
redis.call('HSET', KEYS[8], 'pulse', now)
local sets = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
local suspected, offlined, expired, more = 0, 0, 0, 0
local forgotten, assigned = {}, {}

-- ONLINE -> SUSPECT: unmatchable (the claim checks the deadline itself), leases kept.
local cutoff = silent_before(H, now, C.suspect_after)
if cutoff then
  local hits = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #hits, 2 do
    local id = hits[i]
    redis.call('ZREM', KEYS[1], id)
    if redis.call('EXISTS', C.node .. id) == 1 then
      redis.call('ZADD', KEYS[2], hits[i + 1], id)
      redis.call('HSET', C.node .. id, 'live', 2)
      event(KEYS[7], C.maxlen, EV_SUSPECT, id, 'missed deadline')
      suspected = suspected + 1
    else
      redis.call('ZREM', KEYS[4], id)
    end
  end
  if #hits == 2 * limit then more = 1 end
end

-- SUSPECT -> OFFLINE: out of the idle queues, leases lost.
cutoff = silent_before(H, now, C.offline_after)
if cutoff then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local key = C.node .. id
    redis.call('ZREM', KEYS[2], id)
    if redis.call('EXISTS', key) == 1 then
      local rec = redis.call('HMGET', key, 'models', 'vram')
      idle_leave(C, id, rec[1], rec[2])
      leases_drop(C, K, KEYS[7], id, 'offline')
      redis.call('HSET', key, 'live', 3, 'gone', now, 'why', 'silent')
      redis.call('PEXPIRE', key, ARGV[20])
      redis.call('ZADD', KEYS[3], now, id)
      event(KEYS[7], C.maxlen, EV_OFFLINE, id, 'silent')
      offlined = offlined + 1
    else
      redis.call('ZREM', KEYS[4], id)
    end
  end
  if #ids == limit then more = 1 end
end

-- Leases past their expiry end by themselves: the slot returns to the node, or to a waiting job.
local due = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, limit)
for _, lease_id in ipairs(due) do
  local node, job = lease_end(C, K, KEYS[7], lease_id, now, 'expired')
  if node then
    event(KEYS[7], C.maxlen, EV_LEASE_LOST, node, 'expired lease=' .. lease_id .. ' job=' .. tostring(job))
    idle_sync(C, node, now, false)
    append(assigned, serve_waiting(C, K, node, now))
  end
  expired = expired + 1
end
if #due == limit then more = 1 end

-- Draining nodes past their deadline lose the leases still running.
local drained = redis.call('ZRANGEBYSCORE', KEYS[13], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(drained) do
  redis.call('ZREM', KEYS[13], id)
  if flagged(C, id, FLAG_DRAIN, now) then leases_drop(C, K, KEYS[7], id, 'drain deadline') end
end
if #drained == limit then more = 1 end

-- Flags past their TTL: announced (UNFLAGGED) and tidied away. The claim script already ignores
-- them from the moment they lapse; a flag set again with a later expiry is left alone.
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[14], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #lapsed, 2 do
  local id, kind = string.match(lapsed[i], '^(.*)|(%d+)$')
  redis.call('ZREM', KEYS[14], lapsed[i])
  local key = C.ctl .. id
  if id and redis.call('HGET', key, kind) == lapsed[i + 1] then
    redis.call('HDEL', key, kind, kind .. ':meta', kind .. ':from', kind .. ':until')
    event(KEYS[7], C.maxlen, EV_UNFLAGGED, id, 'kind=' .. kind .. ' expired')
  end
end
if #lapsed == 2 * limit then more = 1 end

-- Waiting jobs past their ttl leave their channel.
local stale = redis.call('ZRANGEBYSCORE', K.wexp, '-inf', now, 'LIMIT', 0, limit)
for _, job in ipairs(stale) do unwait(C, K, job) end
if #stale == limit then more = 1 end

-- Slots are handed to waiting jobs when they free; a node can also become eligible without a
-- slot freeing (a flag lapsed, it recovered from SUSPECT). Offer the longest-idle nodes of each
-- model with waiting jobs to its channel once per sweep (bounded: 8 nodes per model).
for _, m in ipairs(redis.call('SMEMBERS', KEYS[12])) do
  if redis.call('ZCARD', C.wait .. m) > 0 then
    for _, node in ipairs(redis.call('ZRANGE', C.idle .. m, 0, 7)) do
      append(assigned, serve_waiting(C, K, node, now))
    end
  else
    redis.call('SREM', KEYS[12], m)
  end
end

-- OFFLINE past retention -> forgotten
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[19])), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  remove_node(C, id, sets)
  forgotten[#forgotten + 1] = id
end
if #ids == limit then more = 1 end

-- Abandoned partitions evict themselves: the partition-wide keys live only as long as a sweeper
-- keeps refreshing them. Index sets that emptied are dropped from the catalogues here too.
if ARGV[22] == '1' then
  for i = 1, 15 do redis.call('PEXPIRE', KEYS[i], C.ttl) end
  for _, pair in ipairs({{KEYS[5], C.model}, {KEYS[6], C.sub}}) do
    for _, name in ipairs(redis.call('SMEMBERS', pair[1])) do
      if redis.call('PEXPIRE', pair[2] .. name, C.ttl) == 0 then
        redis.call('SREM', pair[1], name)
      end
    end
  end
end

-- Assignments whose caller never settled them (see claim in lib/leases.lua): handed back, with the
-- lease's current terms, to be settled by this caller. Ended leases need nothing.
local unsettled = {}
local old = redis.call('ZRANGEBYSCORE', K.outbox, '-inf', now - tonumber(ARGV[23]), 'LIMIT', 0, limit)
for _, lease_id in ipairs(old) do
  local l = redis.call('HMGET', C.lease .. lease_id, 'token', 'exp', 'done', 'job', 'node', 'sched')
  if lease_live(l[1], l[2], l[3], now) then
    append(unsettled, {l[4], lease_id, l[1], l[2], l[5], l[6] or ''})
  else
    redis.call('ZREM', K.outbox, lease_id)
  end
end
if #old == limit then more = 1 end

local empty = 0
if redis.call('ZCARD', KEYS[4]) == 0 and redis.call('ZCARD', K.leases) == 0 and redis.call('ZCARD', K.wexp) == 0
    and redis.call('ZCARD', K.outbox) == 0 then
  empty = 1
end

local out = {suspected, offlined, expired, more, empty, #forgotten}
append(out, forgotten)
out[#out + 1] = #assigned / 6
append(out, assigned)
return append(out, unsettled)
