-- Rewrites this node's contributions from its own truth (its open sockets),
-- after Redis lost them or a write failed: first takes out whatever Redis
-- holds for the node, then adds the given entries.
-- KEYS[1]  the node's contributions
-- ARGV[1]  the key prefix
-- ARGV[2…] pairs: entry ("r:<room>:<user>" or "u:<user>"), connections
local prefix = ARGV[1]
local function tally(entry, delta)
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if kind == 'u' then
    local n = redis.call('HINCRBY', prefix .. 'online', rest, delta)
    if n <= 0 then redis.call('HDEL', prefix .. 'online', rest) end
    return
  end
  local sep = string.find(rest, ':', 1, true)
  local room, user = string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
  local members = prefix .. 'room:' .. room .. ':members'
  local before = tonumber(redis.call('HGET', members, user) or '0')
  local after = redis.call('HINCRBY', members, user, delta)
  if after <= 0 then
    redis.call('HDEL', members, user)
  end
  if before <= 0 and after > 0 then
    redis.call('HINCRBY', prefix .. 'rooms:active', room, 1)
  elseif before > 0 and after <= 0 then
    if redis.call('HINCRBY', prefix .. 'rooms:active', room, -1) <= 0 then
      redis.call('HDEL', prefix .. 'rooms:active', room)
    end
  end
end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  tally(old[i], -tonumber(old[i + 1]))
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  redis.call('HSET', KEYS[1], ARGV[i], n)
  tally(ARGV[i], n)
end
return 1
