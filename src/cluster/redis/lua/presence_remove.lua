-- Takes one connection of this node out of a cluster-wide tally. Does nothing
-- when this node has no such entry (it was reaped or restored meanwhile).
-- KEYS and ARGV as in presence_add.lua.
-- Returns 1 when the user's count reached zero (last connection anywhere).
local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if mine <= 0 then
  return 0
end
if mine == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if KEYS[3] and redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[3])
  end
  return 1
end
return 0
