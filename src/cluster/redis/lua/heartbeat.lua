-- Marks a node alive until now + ttl, on the Redis clock so nodes with skewed
-- clocks agree, and compacts the node's contributions: every write of this
-- incarnation up to `settled` has finished, so older writes can no longer
-- arrive (the floor rises to it) and the zero entries they guarded go.
-- KEYS[1]  the live-node index (zset: node -> deadline ms)
-- KEYS[2]  the node's contributions (see presence_set.lua)
-- ARGV[1]  the node id, ARGV[2] the ttl in ms, ARGV[3] the incarnation,
-- ARGV[4]  the settled sequence number, ARGV[5…] entries last written as 0
-- Returns 1 when the node was not in the index (first beat, reaped, or Redis
-- came back empty): its contributions must be written again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local inc, settled = ARGV[3], tonumber(ARGV[4])
if added == 0 then
  local _, floor_inc, floor_seq = parse(redis.call('HGET', KEYS[2], '_floor'))
  if floor_inc ~= inc or floor_seq < settled then
    redis.call('HSET', KEYS[2], '_floor', '0/' .. inc .. '/' .. settled)
  end
  for i = 5, #ARGV do
    local n, i_inc, seq = parse(redis.call('HGET', KEYS[2], ARGV[i]))
    if n == 0 and i_inc == inc and seq <= settled then
      redis.call('HDEL', KEYS[2], ARGV[i])
    end
  end
end
return added
