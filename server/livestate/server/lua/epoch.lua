-- epoch.lua: name the current incarnation of the Redis state.
--
-- KEYS[1]  hash  <prefix>:epoch  {ms = epoch start (ms), run_id = Redis run id it was made on}
-- ARGV[1]  the Redis run_id the caller sees
--
-- Returns the epoch (ms). A missing key (FLUSHALL, empty restart) or a different run_id (a restart
-- that reloaded an old snapshot) starts a new epoch at the current time. Epochs only grow, so a
-- server holding an older one never mistakes fresh records for stale ones; records stamped with
-- an older epoch are answered with resync_required, and no node counts as silent for longer than
-- the epoch has existed.

local cur = redis.call('HMGET', KEYS[1], 'ms', 'run_id')
if cur[1] ~= false and cur[2] == ARGV[1] then
  return tonumber(cur[1])
end
local now = now_ms()
if cur[1] ~= false and tonumber(cur[1]) >= now then now = tonumber(cur[1]) + 1 end
redis.call('HSET', KEYS[1], 'ms', now, 'run_id', ARGV[1])
return now
