-- Lists a room as created unless it is already or the created rooms are at
-- their bound. One script, so two nodes creating rooms at once cannot both
-- take the last place. (The caller checked the directory for members.)
-- KEYS[1]  created rooms (set)
-- ARGV[1]  the room, ARGV[2] the most created rooms allowed
-- Returns 1 when created, 0 when it exists, -1 when the bound is reached.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 0
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
return redis.call('SADD', KEYS[1], ARGV[1])
