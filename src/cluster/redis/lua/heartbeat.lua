-- Marks a node alive until now + ttl, on the Redis clock so nodes with skewed
-- clocks agree.
-- KEYS[1]  the live-node index (zset: node -> deadline ms)
-- ARGV[1]  the node id, ARGV[2] the ttl in ms
-- Returns 1 when the node was not in the index (first beat, reaped, or Redis
-- came back empty): its contributions must be written again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
