-- lib/matching.lua: whether a node may take a job.

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
