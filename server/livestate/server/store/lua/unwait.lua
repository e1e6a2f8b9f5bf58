-- unwait.lua: take a waiting job out of one partition's channel (cancelled, gave up waiting, or
-- assigned in another partition).
--
-- KEYS[1]  zset <p>:wexp  waiting jobs, score = when they stop waiting (ms)
-- ARGV[1..18] partition context (lib/base.lua)
-- ARGV[19] job_id
--
-- Returns 1 when the job was waiting here, 0 otherwise.

local C = context()
return unwait(C, {wexp = KEYS[1]}, ARGV[19])
