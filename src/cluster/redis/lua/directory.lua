-- Records a room's member count in its partition's directory, unless a
-- newer count is there already: counts come from the room's tally, each with
-- a version, and may arrive in any order. An emptied room stays as a zero
-- entry for a minute, to stop older counts still on their way, then goes.
-- KEYS[1]  the directory (hash: room -> "members/version")
-- KEYS[2]  its emptied rooms (zset: room -> ms)
-- ARGV[1]  the room, ARGV[2] its members, ARGV[3] the version
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local room, members, version = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 60000, 'LIMIT', 0, 16)) do
  local entry = redis.call('HGET', KEYS[1], gone)
  if entry and string.sub(entry, 1, 2) == '0/' then
    redis.call('HDEL', KEYS[1], gone)
  end
  redis.call('ZREM', KEYS[2], gone)
end
local current = redis.call('HGET', KEYS[1], room)
local seen = current and tonumber(string.match(current, '/(%d+)$'))
if seen and seen >= version then
  return 0
end
redis.call('HSET', KEYS[1], room, members .. '/' .. version)
if members == 0 then
  redis.call('ZADD', KEYS[2], now, room)
else
  redis.call('ZREM', KEYS[2], room)
end
return 1
