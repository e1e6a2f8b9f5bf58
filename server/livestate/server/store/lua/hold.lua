-- hold.lua: take a short lease on a role that one process at a time should play (the sweeper),
-- or keep it when the caller already holds it.
--
-- KEYS[1]  string  <prefix>:sweeper  the token of the process holding the role
-- ARGV[1]  the caller's token (unique per process)
-- ARGV[2]  how long the lease lasts unless kept again (ms)
--
-- Returns 1 when the caller holds the role now, 0 when another process does.
--
-- Why a script: "free, or mine" and the renewal must be one step, or two processes could each
-- see the lease lapse and both take it.

local cur = redis.call('GET', KEYS[1])
if cur ~= false and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
