-- Shared by the presence scripts (prepended to each at build time).
-- A node's entry for a user in one group (a room, or a partition of users)
-- is "count/incarnation/seq" (see presence_set.lua). Returns count,
-- incarnation, seq; a missing or foreign value reads as nothing counted and
-- older than any write.
local function parse(v)
  if not v then return 0, '', -1 end
  local n, inc, seq = string.match(v, '^(%d+)/([^/]*)/(%d+)$')
  if not n then return 0, '', -1 end
  return tonumber(n), inc, tonumber(seq)
end
-- Moves a user's cluster-wide count in a group's tally (hash: user ->
-- connections; a room's also ":v", the version of its member count, which
-- no user name can be). Returns crossed (1 rose from zero, -1 fell to zero,
-- else 0) and, for a room whose member count changed, members and version
-- (else 0, 0) for the room directory. A room left empty keeps its version a
-- day.
local function tally(key, user, delta, room)
  local before = tonumber(redis.call('HGET', key, user) or '0')
  local after = redis.call('HINCRBY', key, user, delta)
  if after <= 0 then redis.call('HDEL', key, user) end
  local crossed = 0
  if before <= 0 and after > 0 then crossed = 1
  elseif before > 0 and after <= 0 then crossed = -1 end
  if crossed == 0 or not room then return crossed, 0, 0 end
  -- Versions start from the Redis clock, so a room whose tally expired
  -- (empty for a day) counts on above every version it had before.
  if redis.call('HEXISTS', key, ':v') == 0 then
    local t = redis.call('TIME')
    redis.call('HSET', key, ':v', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  local version = redis.call('HINCRBY', key, ':v', 1)
  local members = redis.call('HLEN', key) - 1
  if members == 0 then
    redis.call('PEXPIRE', key, 86400000)
  else
    redis.call('PERSIST', key)
  end
  return crossed, members, version
end
-- A room's member count and its version as they stand in its tally (0, 0
-- for a room never counted).
local function room_size(key)
  local version = tonumber(redis.call('HGET', key, ':v') or '0')
  if version == 0 then return 0, 0 end
  return redis.call('HLEN', key) - 1, version
end
