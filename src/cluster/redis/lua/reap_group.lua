-- Takes a dead (or departing) node's entries in one group out of the
-- group's tally, and deletes them, so a second reaper finds nothing to do.
-- KEYS[1]  the node's entries in the group, KEYS[2] the group's tally
-- ARGV[1]  "room" or "user"
-- Returns { members, version, { users who thereby left … } }: the room's
-- member count and its version as they stand (0, 0 for users, or a room
-- never counted), so a reaper that failed to list it before can.
local room = ARGV[1] == 'room'
local members, version, left = 0, 0, {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local n = parse(entries[i + 1])
  if entries[i] ~= '_floor' and n > 0 then
    local crossed = tally(KEYS[2], entries[i], -n, room)
    if crossed == -1 then table.insert(left, entries[i]) end
  end
end
redis.call('DEL', KEYS[1])
if room then
  members, version = room_size(KEYS[2])
end
return { members, version, left }
