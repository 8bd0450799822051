-- Rewrites this node's entries in one group from its own ledger (what its
-- open sockets amount to), after Redis lost them, a write failed, or the
-- node started under an id an earlier process used: entries of another
-- incarnation go, entries no newer than the snapshot take its count, newer
-- ones stay. The tally moves by the differences.
-- KEYS[1]  this node's entries in the group, KEYS[2] the group's tally
-- ARGV[1]  "room" or "user", ARGV[2] the incarnation, ARGV[3] the
--          snapshot's sequence number, ARGV[4…] pairs: user, connections
-- Returns { members, version, { sign, user, … } }: the room's member count
-- and its version (0, 0 for users), and every user whose count crossed zero
-- ("+" arrived, "-" left).
local room, inc, snap = ARGV[1] == 'room', ARGV[2], tonumber(ARGV[3])
local members, version, changes = 0, 0, {}
local function move(user, delta)
  if delta == 0 then return end
  local crossed = tally(KEYS[2], user, delta, room)
  if crossed == 1 then table.insert(changes, '+'); table.insert(changes, user) end
  if crossed == -1 then table.insert(changes, '-'); table.insert(changes, user) end
end
local wanted = {}
for i = 4, #ARGV, 2 do
  wanted[ARGV[i]] = tonumber(ARGV[i + 1])
end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  local user = old[i]
  if user ~= '_floor' then
    local n, e_inc, seq = parse(old[i + 1])
    if e_inc == inc and seq > snap then
      -- Written after the snapshot: already the truth.
      wanted[user] = nil
    else
      local target = wanted[user] or 0
      wanted[user] = nil
      move(user, target - n)
      if target > 0 then
        redis.call('HSET', KEYS[1], user, target .. '/' .. inc .. '/' .. snap)
      else
        redis.call('HDEL', KEYS[1], user)
      end
    end
  end
end
for user, n in pairs(wanted) do
  move(user, n)
  redis.call('HSET', KEYS[1], user, n .. '/' .. inc .. '/' .. snap)
end
local _, floor_inc, floor_seq = parse(redis.call('HGET', KEYS[1], '_floor'))
if floor_inc ~= inc or floor_seq < snap then
  -- A restore that arrives after a newer one never lowers its floor.
  redis.call('HSET', KEYS[1], '_floor', '0/' .. inc .. '/' .. snap)
end
if room then
  members, version = room_size(KEYS[2])
end
return { members, version, changes }
