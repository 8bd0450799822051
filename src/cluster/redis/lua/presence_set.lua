-- Sets this node's count for one user in one group (the user's connections
-- in a room, or the user's connections, in the user's partition) and moves
-- the group's tally by the difference. Writes are absolute and versioned, so
-- they may run in any order: a write older than what the entry holds, or
-- older than the group's last restore or compaction (`_floor`), changes
-- nothing. An entry of an earlier incarnation of this node id (a crashed
-- process) is simply replaced.
-- KEYS[1]  this node's entries in the group (hash: user -> "n/incarnation/seq")
-- KEYS[2]  the group's tally
-- ARGV[1]  the user, ARGV[2] the incarnation, ARGV[3] the write's sequence
-- number, ARGV[4] the count, ARGV[5] "room" or "user"
-- ARGV[6]  the latest Redis time (ms) the write may apply at ("0": no
--          limit): a write held up by a silent link and retransmitted after
--          its node gave up on it (and maybe compacted the floor that would
--          have stopped it) must change nothing
-- Returns { crossed, members, version } (see tally in entry.lua), or
-- { "late" } past the deadline.
if too_late(tonumber(ARGV[6])) then
  return { 'late' }
end
local user, inc, seq, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local _, floor_inc, floor_seq = parse(redis.call('HGET', KEYS[1], '_floor'))
if floor_inc == inc and seq <= floor_seq then
  return { 0, 0, 0 }
end
local old, old_inc, old_seq = parse(redis.call('HGET', KEYS[1], user))
if old_inc == inc and old_seq >= seq then
  return { 0, 0, 0 }
end
redis.call('HSET', KEYS[1], user, n .. '/' .. inc .. '/' .. seq)
if n == old then
  return { 0, 0, 0 }
end
local crossed, members, version = tally(KEYS[2], user, n - old, ARGV[5] == 'room')
return { crossed, members, version }
