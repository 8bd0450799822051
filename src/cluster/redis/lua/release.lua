-- Ends the reaping of a node: takes the rooms the claim returned off its
-- list, unless the node listed one again meanwhile (it is alive and joined
-- while being reaped: a higher score). Rooms still listed mean the node
-- wrote entries during the reap, which nobody would reap if it died before
-- its next beat: it goes back among the live nodes as expired, so the next
-- reaper finishes the job, or its own next beat finds itself expired and
-- restores.
-- KEYS[1]  the nodes being reaped, KEYS[2] the node's rooms,
-- KEYS[3]  the live nodes of its partition
-- ARGV[1]  the node id, ARGV[2…] pairs: room, score as claimed
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[2], ARGV[i])
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[2]) > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], now - 1, ARGV[1])
end
return 0
