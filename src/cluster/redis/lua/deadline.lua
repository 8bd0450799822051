-- Shared by the scripts whose write must not apply late (prepended at build
-- time): true when Redis's clock is past `deadline` (ms; 0 = no limit), the
-- latest time the node still waits for the answer (see
-- `Redis::store_deadline`).
local function too_late(deadline)
  if deadline <= 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline
end
