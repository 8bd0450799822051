-- Lists a room in the directory unless it is listed already (created, or has
-- members).
-- KEYS[1]  created rooms (set), KEYS[2] active rooms (hash)
-- ARGV[1]  the room
-- Returns 1 when created, 0 when it exists.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
return redis.call('SADD', KEYS[1], ARGV[1])
