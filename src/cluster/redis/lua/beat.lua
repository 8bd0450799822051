-- Marks a node alive until now + ttl, on the Redis clock so nodes with skewed
-- clocks agree.
-- KEYS[1]  the live nodes of the node's partition (zset: node -> deadline ms)
-- KEYS[2]  the nodes of that partition being reaped (zset: node -> lease)
-- KEYS[3]  the node's status (string), what it says about itself
-- ARGV[1]  the node id, ARGV[2] the ttl in ms, ARGV[3] the status, ARGV[4]
--          how long the status lives, ms
-- Returns { state, now }: now is the Redis clock in ms (the node keeps its
-- offset, see append.lua); state is 1 when the node was not listed, or
-- listed as expired (first beat, reaped, Redis came back empty, or beats
-- late): its entries must be written again; 2 when a reaper is taking its entries out right now: it stays
-- unlisted until the reaper is done (or its lease ran out), and the beat
-- after that returns 1.
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if lease and tonumber(lease) >= now then
  return { 2, now }
end
if lease then
  -- Its reaper died midway and nobody took the job over (this node may be
  -- the only one left): a restore rewrites every group anyway.
  redis.call('ZREM', KEYS[2], ARGV[1])
end
-- Listed but expired: a reaper may have taken its entries out already.
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if deadline and tonumber(deadline) < now then
  added = 1
end
return { added, now }
