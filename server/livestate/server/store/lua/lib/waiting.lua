-- lib/waiting.lua: jobs waiting in a partition's channel, and serving them to a freed slot.

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
