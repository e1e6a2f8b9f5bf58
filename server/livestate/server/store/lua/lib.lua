-- lib.lua: helpers prepended to every livestate script when it is loaded (scripts.py). It owns
-- no key: every key a helper touches is passed in by the calling script, or is a per-item key
-- made of a base from the key builder plus an id.
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

local function event(stream, maxlen, kind, id, detail)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'node', id, 'detail', detail)
end

-- Hearing: how long a node's silence counts. No node counts as silent for longer than the Redis
-- state has existed (the epoch), nor for the time nobody could hear it: when no sweep has run
-- for longer than `gap` ms (Redis was frozen or unreachable, or every server was down), that
-- stretch is an outage and is left out of every node's silence. One outage is forgiven per
-- `offline_after` at most, so sweeps that merely lag behind never freeze liveness: a dead node
-- still turns SUSPECT and OFFLINE, only later by the length of one outage.
--   meta: <p>:meta hash {pulse = last sweep (ms), ostart, oend = the last outage forgiven (ms)}
-- The first script to notice an outage records it, so every reader agrees on it afterwards.
-- records.py mirrors this rule for reads (Hearing); test_liveness checks that they agree.
local function hearing(meta, now, C)
  local m = redis.call('HMGET', meta, 'pulse', 'ostart', 'oend')
  local H = {epoch = C.epoch, ostart = tonumber(m[2] or '0'), oend = tonumber(m[3] or '0')}
  if m[1] ~= false and now - tonumber(m[1]) > C.gap and now - H.oend > C.offline_after then
    H.ostart, H.oend = tonumber(m[1]), now
    redis.call('HSET', meta, 'ostart', H.ostart, 'oend', H.oend, 'pulse', now)
  end
  return H
end

-- How long node last seen at `seen` has been silent, outage and epoch left out.
local function silence(H, seen, now)
  seen = math.max(tonumber(seen), H.epoch)
  if seen >= H.oend then return now - seen end
  if seen >= H.ostart then return now - H.oend end
  return (H.ostart - seen) + (now - H.oend)
end

-- The last-seen score below which every node has been silent longer than `limit` ms (silence
-- only shrinks as `seen` grows, so this is one ZRANGEBYSCORE bound), or nil when none has.
local function silent_before(H, now, limit)
  local since_outage = now - H.oend
  local cut = now - limit
  if since_outage <= limit then cut = H.ostart - (limit - since_outage) end
  if H.epoch >= cut then return nil end
  return cut
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

-- True when a flag of `kind` is in force on the node.
local function flagged(C, id, kind, now)
  local e = tonumber(redis.call('HGET', C.ctl .. id, kind) or '-1')
  return e == 0 or e > now
end

-- The key naming the lease a job holds in this partition (job_id -> lease_id), so a repeated
-- Match for the job, however it got here (a retry after a timeout, a concurrent copy), answers
-- with that lease instead of claiming a second slot. Lease ids contain '/', job keys do not.
local function job_lease_key(C, job)
  return C.lease .. 'job:' .. job
end

-- The nodes of this partition the job failed on (written by the Fail that decided it, so no
-- later step can lose it): every claim for the job skips them.
local function tried_key(C, job)
  return C.lease .. 'tried:' .. job
end

local function exclude_tried(C, req, job)
  for _, node in ipairs(redis.call('SMEMBERS', tried_key(C, job))) do req.excluded[node] = true end
  return req
end

-- A lease that is in force: its record exists, has not ended and has not expired.
local function lease_live(l_token, l_exp, l_done, now)
  return l_token ~= false and not l_done and tonumber(l_exp) > now
end

-- Ends one lease and frees its slot; a draining node whose last lease this was is DRAINED. The
-- record stays a while as a tombstone ('done' = how it ended), so a Release or Fail repeated
-- after a timeout answers as the first one did instead of "no such lease".
-- K: {leases, outbox}. Returns the node id, job id and scheduler (false when gone or ended).
local function lease_end(C, K, events, lease_id, now, how)
  local key = C.lease .. lease_id
  local l = redis.call('HMGET', key, 'node', 'job', 'sched', 'done')
  redis.call('ZREM', K.leases, lease_id)
  redis.call('ZREM', K.outbox, lease_id)
  if l[1] == false or l[4] then return false, false, false end
  redis.call('HSET', key, 'done', how)
  redis.call('PEXPIRE', key, C.margin)
  if l[2] and redis.call('GET', job_lease_key(C, l[2])) == lease_id then
    redis.call('DEL', job_lease_key(C, l[2]))
  end
  local node = l[1]
  if node then
    redis.call('SREM', C.nlease .. node, lease_id)
    if redis.call('EXISTS', C.node .. node) == 1 then
      local used = redis.call('HINCRBY', C.node .. node, 'used', -1)
      if used < 0 then
        used = 0
        redis.call('HSET', C.node .. node, 'used', 0)
      end
      if used == 0 and flagged(C, node, FLAG_DRAIN, now) then event(events, C.maxlen, EV_DRAINED, node, 'drained') end
    end
  end
  return node, l[2], l[3]
end

-- Drops every lease a node holds (it went offline, restarted or left): one LEASE_LOST event each.
-- K: {leases, outbox}.
local function leases_drop(C, K, events, id, reason)
  local now = now_ms()
  for _, lease_id in ipairs(redis.call('SMEMBERS', C.nlease .. id)) do
    local node, job = lease_end(C, K, events, lease_id, now, 'lost')
    if node then
      event(events, C.maxlen, EV_LEASE_LOST, id, reason .. ' lease=' .. lease_id .. ' job=' .. tostring(job))
    end
  end
  redis.call('DEL', C.nlease .. id)
  if redis.call('EXISTS', C.node .. id) == 1 then redis.call('HSET', C.node .. id, 'used', 0) end
end

-- True when a flag that keeps the node out of matching is in force: any kind but MAINTENANCE
-- unexpired, and MAINTENANCE only inside its window ('6:from' <= now).
local function blocked(C, id, now)
  local raw = redis.call('HGETALL', C.ctl .. id)
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

-- Subcloud membership granted to a node, as its control hash keeps it: 'g:<subcloud>' =
-- '<version>:1' (granted) or '<version>:0' (revoked). Versions come from the subcloud's grant
-- record (grant.lua) and only grow, so a write carrying an older version (a registration that
-- read the grants just before a revocation) never undoes a newer one.
local function grant_parse(value)
  local v, st = string.match(value or '', '^(%d+):([01])$')
  return tonumber(v or '0'), st == '1'
end

-- Writes a grant or revocation, `value` = '<version>:<0|1>', unless the hash holds a newer one
-- (versions stay strings: past 2^53 / 1000 a Lua number would print in exponent form). Returns
-- true when written.
local function grant_apply(key, sub, value)
  local have = grant_parse(redis.call('HGET', key, 'g:' .. sub))
  local version = grant_parse(value)
  if version == 0 or have >= version then return false end
  redis.call('HSET', key, 'g:' .. sub, value)
  return true
end

-- Keeps a node's control hash as long as what it holds: no expiry while a flag without TTL or a
-- membership grant is held, else until its last flag lapses (plus margin) or `keep` ms from
-- now, whichever is later. A revocation is kept a margin at least: long enough to outlast any
-- registration that read the grants before it.
local function ctl_keep(key, now, margin, keep)
  local raw = redis.call('HGETALL', key)
  local last = now + (keep or 0)
  for i = 1, #raw, 2 do
    local e
    if string.match(raw[i], '^%d+$') then
      e = tonumber(raw[i + 1])
    elseif string.sub(raw[i], 1, 2) == 'g:' then
      local _, granted = grant_parse(raw[i + 1])
      e = granted and 0 or now
    end
    if e == 0 then
      redis.call('PERSIST', key)
      return
    end
    if e then last = math.max(last, e + margin) end
  end
  if #raw > 0 and redis.call('PTTL', key) < last - now then redis.call('PEXPIREAT', key, last) end
end

-- Remembers when a flag lapses, so the sweep can announce it (UNFLAGGED) and tidy it away.
--   flagexp: <p>:flagexp zset of "<node_id>|<kind>", score = expiry (ms)
local function flag_expiry(flagexp, id, kind, expire)
  if tonumber(expire) > 0 then
    redis.call('ZADD', flagexp, expire, id .. '|' .. kind)
  else
    redis.call('ZREM', flagexp, id .. '|' .. kind)
  end
end

-- What the node itself is told about its flags: paused (PAUSE in force) and the messages of
-- PAUSE and MAINTENANCE flags. Every other kind, SHADOW_BAN above all, stays invisible to it.
local function notices(C, id, now)
  local raw = redis.call('HGETALL', C.ctl .. id)
  local paused, out = 0, {}
  if #raw == 0 then return paused, out end
  local ctl = {}
  for i = 1, #raw, 2 do ctl[raw[i]] = raw[i + 1] end
  for _, kind in ipairs({FLAG_PAUSE, FLAG_MAINTENANCE}) do
    local e = tonumber(ctl[kind] or '-1')
    if e == 0 or e > now then
      if kind == FLAG_PAUSE then paused = 1 end
      local ok, meta = pcall(cjson.decode, ctl[kind .. ':meta'] or '{}')
      if ok and type(meta) == 'table' and type(meta.message) == 'string' and meta.message ~= '' then
        out[#out + 1] = meta.message
      end
    end
  end
  return paused, out
end

-- A job's node requirements, from their wire form (also how a waiting job stores them).
-- isolated_csv: subclouds whose members only jobs naming them may use (the job's own excepted).
-- granted_csv: of the job's subcloud and the isolated ones, those whose membership is granted:
-- a node is a member of those only while its control hash holds a grant.
local function requirements(min_vram, gpus_csv, subcloud, label_lines, excluded_csv, isolated_csv,
                            granted_csv)
  local req = {min_vram = tonumber(min_vram), gpus = as_set(split(gpus_csv)), want_gpu = gpus_csv ~= '',
               subcloud = subcloud, labels = {}, excluded = as_set(split(excluded_csv)),
               isolated = split(isolated_csv), granted = as_set(split(granted_csv)),
               fields = {'state', 'live', 'seen', 'used', 'slots', 'vram', 'gpu', 'subs', 'vfree', 'opause',
                         'ghost', 'epoch'}}
  for _, line in ipairs(split(label_lines, '\n')) do
    local k, v = string.match(line, '^([^=]+)=(.*)$')
    req.labels[#req.labels + 1] = {k, v}
    req.fields[#req.fields + 1] = 'l:' .. k
  end
  return req
end

-- Is node `id` (which listed the subclouds `subs`) a member of subcloud `s`? Listing it is
-- enough for an open subcloud; a granted one also needs the grant, read here, in the claim, so
-- a revocation holds for every Match that starts after it.
local function member(C, id, req, subs, s)
  if not subs[s] then return false end
  if not req.granted[s] then return true end
  local _, granted = grant_parse(redis.call('HGET', C.ctl .. id, 'g:' .. s))
  return granted
end

-- Can node `id` take a job with requirements `req` now?
-- Returns true, free VRAM (eligible); nil (not now); false (a stale idle-queue entry: the node
-- is gone, OFFLINE, not IDLE or full, so the caller may drop the entry).
local function eligible(C, id, req, now, H)
  if req.excluded[id] then return nil end
  local r = redis.call('HMGET', C.node .. id, unpack(req.fields))
  if r[1] == false or r[2] == LIVE_OFFLINE or r[1] ~= STATE_IDLE then return false end
  -- A record of an older epoch is stale (its agent may run jobs this state does not know of,
  -- and must register again first; see beat.lua): it leaves the idle queue.
  if tonumber(r[12] or '0') < C.epoch then return false end
  if occupied(r[4], r[11]) >= tonumber(r[5] or '1') then return false end
  -- The deadline is checked here, not left to the sweep: a silent node is never matched.
  if silence(H, r[3], now) > C.suspect_after then return nil end
  if tonumber(r[6] or '0') < req.min_vram then return nil end
  if req.want_gpu and not req.gpus[r[7]] then return nil end
  if req.subcloud ~= '' or #req.isolated > 0 then
    local subs = as_set(split(r[8]))
    if req.subcloud ~= '' and not member(C, id, req, subs, req.subcloud) then return nil end
    for _, s in ipairs(req.isolated) do
      if member(C, id, req, subs, s) then return nil end
    end
  end
  if r[10] == '1' then return nil end  -- paused by its operator
  for i, kv in ipairs(req.labels) do
    if r[12 + i] ~= kv[2] then return nil end
  end
  if blocked(C, id, now) then return nil end
  return true, tonumber(r[9] or '0')
end

-- Claims a slot of node `id` for `job`: a lease with a fencing token that never repeats, even
-- across a Redis that lost the counter (each token is at least the Redis clock in ms times 1024,
-- which only grows). The same step writes what a crash must not lose: the job's lease in this
-- partition (a repeated Match finds it) and an outbox entry, from which any server process
-- records the assignment on the job and tells its scheduler (assignments.py drains it), so no
-- assignment depends on the caller surviving its own reply.
--   outbox: <p>:outbox zset of lease ids not yet settled, score = when claimed (ms)
-- K: {leases, fence, outbox}. Returns lease_id, token.
local function claim(C, K, id, job, sched, expire, now)
  local token = math.max(tonumber(redis.call('GET', K.fence) or '0') + 1, now * 1024)
  local token_s = string.format('%d', token)
  redis.call('SET', K.fence, token_s)
  local lease_id = C.label .. '/' .. string.format('%x', token)
  local key = C.lease .. lease_id
  redis.call('HSET', key, 'job', job, 'node', id, 'token', token_s, 'exp', expire, 'sched', sched)
  redis.call('PEXPIREAT', key, expire + C.margin)
  redis.call('ZADD', K.leases, expire, lease_id)
  redis.call('SADD', C.nlease .. id, lease_id)
  if redis.call('PTTL', C.nlease .. id) < expire + C.margin - now then
    redis.call('PEXPIREAT', C.nlease .. id, expire + C.margin)
  end
  redis.call('SET', job_lease_key(C, job), lease_id, 'PXAT', expire + C.margin)
  redis.call('ZADD', K.outbox, now, lease_id)
  redis.call('PEXPIRE', K.outbox, C.ttl)
  redis.call('HINCRBY', C.node .. id, 'used', 1)
  idle_sync(C, id, now, true)
  return lease_id, token_s
end

-- The job's live lease in this partition, if it has one: lease_id, token, expire, node.
local function job_lease(C, job, now)
  local lease_id = redis.call('GET', job_lease_key(C, job))
  if not lease_id then return nil end
  local l = redis.call('HMGET', C.lease .. lease_id, 'token', 'exp', 'done', 'node', 'job')
  if not lease_live(l[1], l[2], l[3], now) or l[5] ~= job then return nil end
  return lease_id, l[1], tonumber(l[2]), l[4]
end

-- Takes a waiting job out of this partition's channel. K: {wexp}.
local function unwait(C, K, job)
  local model = redis.call('HGET', C.wjob .. job, 'model')
  if model then redis.call('ZREM', C.wait .. model, job) end
  redis.call('DEL', C.wjob .. job)
  redis.call('ZREM', K.wexp, job)
  return model and 1 or 0
end

-- A slot of node `id` just freed (or the node just became able to work): hand it to the waiting
-- jobs of its models, highest priority first, oldest first within a priority, as long as it has
-- free slots. Bounded: the first WAIT_WALK waiting jobs of each model are considered, so jobs
-- this node cannot serve at the head of a channel do not hide the ones behind them.
-- K: {leases, fence, meta, wexp, outbox}. Returns assignments as a flat list of
-- {job, lease_id, token, expire, node, scheduler} sextuples.
local WAIT_WALK = 128
local function serve_waiting(C, K, id, now)
  local out = {}
  local models = redis.call('HGET', C.node .. id, 'models')
  if not models then return out end
  local H = hearing(K.meta, now, C)
  for _, m in ipairs(split(models)) do
    for _, job in ipairs(redis.call('ZRANGE', C.wait .. m, 0, WAIT_WALK - 1)) do
      local raw = redis.call('HGETALL', C.wjob .. job)
      local w = {}
      for i = 1, #raw, 2 do w[raw[i]] = raw[i + 1] end
      if not w.exp or tonumber(w.exp) <= now then
        redis.call('ZREM', C.wait .. m, job)
        unwait(C, K, job)
      else
        local req = exclude_tried(C, requirements(w.vram, w.gpus, w.sub, w.labels, w.excl, w.iso, w.grant),
                                  job)
        local ok = eligible(C, id, req, now, H)
        if ok == false then return out end
        if ok then
          -- Until its scheduler picks it up, the assignment holds for the job's whole ttl.
          local expire = math.max(now + tonumber(w.lttl), tonumber(w.exp))
          local lease_id, token = claim(C, K, id, job, w.sched, expire, now)
          unwait(C, K, job)
          for _, v in ipairs({job, lease_id, token, expire, id, w.sched}) do out[#out + 1] = v end
        end
      end
    end
  end
  return out
end

local function append(list, more)
  for _, v in ipairs(more) do list[#list + 1] = v end
  return list
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
