-- The nodes whose heartbeat has not expired, on the Redis clock.
-- KEYS[1]  the live-node index; ARGV[1] "live" or "dead"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'dead' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
end
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
