-- Sets this node's count for one entry (a user's connections, or a user's
-- connections in a room) and moves the cluster-wide tally by the difference.
-- Writes are absolute and versioned, so they may run in any order: a write
-- older than what the entry holds, or older than the node's last restore
-- (`_floor`), changes nothing. An entry of an earlier incarnation of this node
-- id (a crashed process) is simply replaced.
-- KEYS[1]  this node's contributions (hash: entry -> "n/incarnation/seq")
-- KEYS[2]  the tally (hash: user -> connections, cluster-wide)
-- KEYS[3]  optional: the room directory (hash: room -> distinct members)
-- ARGV[1]  the entry, ARGV[2] the user, ARGV[3] the incarnation,
-- ARGV[4]  the write's sequence number, ARGV[5] the count,
-- ARGV[6]  the room (with KEYS[3])
-- Returns 1 when the user's tally rose from zero, -1 when it fell to zero,
-- else 0.
local inc, seq, n = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local _, floor_inc, floor_seq = parse(redis.call('HGET', KEYS[1], '_floor'))
if floor_inc == inc and seq <= floor_seq then
  return 0
end
local old, old_inc, old_seq = parse(redis.call('HGET', KEYS[1], ARGV[1]))
if old_inc == inc and old_seq >= seq then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], n .. '/' .. inc .. '/' .. seq)
local delta = n - old
if delta == 0 then
  return 0
end
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local after = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
if after <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
if before <= 0 and after > 0 then
  if KEYS[3] then redis.call('HINCRBY', KEYS[3], ARGV[6], 1) end
  return 1
end
if before > 0 and after <= 0 then
  if KEYS[3] and redis.call('HINCRBY', KEYS[3], ARGV[6], -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[6])
  end
  return -1
end
return 0
