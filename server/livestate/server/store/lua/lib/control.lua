-- lib/control.lua: a node's control hash: flags, their expiry and notices, subcloud memberships.

-- True when a flag of `kind` is in force on the node.
local function flagged(C, id, kind, now)
  local e = tonumber(redis.call('HGET', C.ctl .. id, kind) or '-1')
  return e == 0 or e > now
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
