-- epoch.lua: name the current incarnation of the Redis state.
--
-- KEYS[1]  hash  <prefix>:epoch, or a partition's <p>:epoch (epoch.py)  {ms = epoch start (ms),
--                run_id = Redis run id last seen,
--                                 mark = a counter every maintenance tick advances}
-- ARGV[1]  the Redis run_id the caller sees ("" = do not check: just read, or start an epoch
--          when there is none)
-- ARGV[2]  the highest mark the calling process has seen (0 = none)
-- ARGV[3]  1 = advance the mark (the maintenance tick), 0 = not
-- ARGV[4]  start a new epoch unless the current one began at or after this time (ms); 0 = not.
--          Passed by a process coming back to this Redis after serving from another one
--          (fallback.py), and with the new epoch of a partition that lost its state (epoch.py)
--
-- Returns {epoch_ms, mark}. A missing key (FLUSHALL, an empty restart) starts a new epoch at the
-- current time. A new run_id alone does not: every restart changes it, and a restart that
-- reloaded the same data (AOF, a final RDB, a replica promoted with everything acknowledged)
-- lost nothing, so leases, flags and waiting jobs carry on. The mark tells the two apart: an
-- older snapshot carries a mark below one some server process has already seen, and starts a
-- new epoch (its leases and queues are stale; nodes resync). Epochs only grow, so a server
-- holding an older one never mistakes fresh records for stale ones. A process that served from
-- another Redis meanwhile knows this one's records are stale (its nodes beat elsewhere): ARGV[4]
-- starts a new epoch, once, however many processes come back (the first one's epoch is newer
-- than the moment each of the others left).

local cur = redis.call('HMGET', KEYS[1], 'ms', 'run_id', 'mark')
local seen = tonumber(ARGV[2])
local now = now_ms()
local epoch, mark = tonumber(cur[1] or '0'), tonumber(cur[3] or '0')
if cur[1] == false then
  epoch, mark = now, seen + 1
  redis.call('HSET', KEYS[1], 'ms', epoch, 'run_id', ARGV[1], 'mark', mark)
elseif ARGV[1] ~= '' and cur[2] ~= ARGV[1] then
  if mark < seen then
    epoch, mark = math.max(now, epoch + 1), seen + 1
    redis.call('HSET', KEYS[1], 'ms', epoch, 'mark', mark)
  end
  redis.call('HSET', KEYS[1], 'run_id', ARGV[1])
end
local since = tonumber(ARGV[4] or '0')
if since > 0 and epoch < since then
  -- At least `since`: another Redis's clock (a partition's shard) may run a little ahead.
  epoch, mark = math.max(now, epoch + 1, since), math.max(mark, seen) + 1
  redis.call('HSET', KEYS[1], 'ms', epoch, 'mark', mark)
end
if ARGV[3] == '1' then mark = redis.call('HINCRBY', KEYS[1], 'mark', 1) end
return {epoch, mark}
