-- Removes every contribution of one node from the cluster-wide tallies.
-- Only the caller that takes the node out of the live index does the work, so
-- each dead node is reaped exactly once however many nodes try.
-- KEYS[1]  the live-node index
-- KEYS[2]  the node's contributions (hash: "r:<room>:<user>" or "u:<user>" ->
--          "n/incarnation/seq", see presence_set.lua)
-- ARGV[1]  the node id
-- ARGV[2]  the key prefix (tallies are <prefix>room:<room>:members, <prefix>online)
-- ARGV[3]  "dead": only if its deadline passed; "self": unconditionally
-- Returns a flat list room1, user1, room2, user2… of users who left a room
-- everywhere.
if ARGV[3] == 'dead' then
  local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not deadline or tonumber(deadline) >= now then
    return {}
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
local prefix = ARGV[2]
local departures = {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local entry = entries[i]
  local n = parse(entries[i + 1])
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if entry == '_floor' or n == 0 then
    -- nothing counted
  elseif kind == 'u' then
    if redis.call('HINCRBY', prefix .. 'online', rest, -n) <= 0 then
      redis.call('HDEL', prefix .. 'online', rest)
    end
  else
    local sep = string.find(rest, ':', 1, true)
    local room, user = string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
    local members = prefix .. 'room:' .. room .. ':members'
    if redis.call('HINCRBY', members, user, -n) <= 0 then
      redis.call('HDEL', members, user)
      if redis.call('HINCRBY', prefix .. 'rooms:active', room, -1) <= 0 then
        redis.call('HDEL', prefix .. 'rooms:active', room)
      end
      table.insert(departures, room)
      table.insert(departures, user)
    end
  end
end
redis.call('DEL', KEYS[2])
return departures
