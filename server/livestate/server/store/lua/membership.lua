-- membership.lua: copy a grant or revocation of one subcloud into the control hashes of nodes
-- in this partition, where the claim script reads it (member in lib/matching.lua).
--
-- KEYS[1..n]  hash  <p>:ctl:<node_id>  the control hash of each node
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] subcloud
-- ARGV[20] version (grant.lua)
-- ARGV[21] 1 = granted, 0 = revoked
--
-- Returns how many hashes took the change (a hash already holding a newer version keeps it).
--
-- Written whether or not the node's record is here yet: a registration into this partition may
-- be under way with grants it read before this change, and the version kept here is what stops
-- it from undoing the change.

local C = context()
local now = now_ms()
local took = 0
for _, key in ipairs(KEYS) do
  if grant_apply(key, ARGV[19], ARGV[20] .. ':' .. ARGV[21]) then took = took + 1 end
  ctl_keep(key, now, C.margin)
end
return took
