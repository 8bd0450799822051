-- The nodes of one partition whose heartbeat has not expired, or ("dead")
-- those to reap: expired, or left by a reaper whose lease ran out.
-- KEYS[1]  the live nodes, KEYS[2] the nodes being reaped; ARGV[1] "live" or "dead"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'dead' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)) do
    table.insert(dead, node)
  end
  return dead
end
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
