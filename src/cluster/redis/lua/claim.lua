-- Claims a node's entries for reaping: only the caller that moves it from the
-- live nodes to the reaping ones (or takes over a reaper whose lease ran out)
-- does the work, so each dead node is reaped by one reaper at a time.
-- KEYS[1]  the live nodes of its partition, KEYS[2] the nodes being reaped,
-- KEYS[3]  the node's rooms (zset)
-- ARGV[1]  the node id, ARGV[2] "dead": only if its deadline passed; "self":
--          unconditionally; ARGV[3] the lease, ms
-- Returns false when not claimed, else the rooms where it may have entries,
-- with their scores: room, score, room, score, ….
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
if ARGV[2] == 'dead' then
  local deadline = redis.call('ZSCORE', KEYS[1], node)
  local lease = redis.call('ZSCORE', KEYS[2], node)
  local expired = (deadline and tonumber(deadline) < now) or (lease and tonumber(lease) < now)
  if not expired then
    return false
  end
end
redis.call('ZREM', KEYS[1], node)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), node)
return redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
