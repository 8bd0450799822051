-- Counts one more connection of this node in a cluster-wide tally.
-- KEYS[1]  this node's contributions (hash: entry -> connections)
-- KEYS[2]  the tally (hash: user -> connections, cluster-wide)
-- KEYS[3]  optional: the room directory (hash: room -> distinct members)
-- ARGV[1]  this node's entry, ARGV[2] the user, ARGV[3] the room (with KEYS[3])
-- Returns 1 when the user's count went from zero (first connection anywhere).
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
  if KEYS[3] then
    redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  end
  return 1
end
return 0
