-- ctl_import.lua: bring flags into a node's control hash in this partition: flags set while
-- the node was not registered, or carried over from the partition it left.
--
-- KEYS[1]  stream <p>:events  node events (capped)
-- KEYS[2]  zset   <p>:flagexp flags with a TTL (see flag_expiry in lib.lua)
-- ARGV[1..18] partition context (lib.lua)
-- ARGV[19] node_id
-- ARGV[20..] field, value pairs of the flags ('<kind>', '<kind>:meta', '<kind>:from')
--
-- Returns the number of flag kinds imported.

local C = context()
local now = now_ms()
local key = C.ctl .. ARGV[19]
local kinds = 0
for i = 20, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  if string.match(ARGV[i], '^%d+$') then
    kinds = kinds + 1
    flag_expiry(KEYS[2], ARGV[19], ARGV[i], ARGV[i + 1])
    event(KEYS[1], C.maxlen, EV_FLAGGED, ARGV[19], 'kind=' .. ARGV[i])
  end
end
ctl_keep(key, now, C.margin)
return kinds
