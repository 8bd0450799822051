-- Takes rooms out of a node's room list unless a write newer than `settled`
-- listed them again (a join racing the compaction that emptied them).
-- KEYS[1]  the node's rooms (zset: room -> sequence number of its listing)
-- ARGV[1]  settled, ARGV[2…] the rooms
local settled = tonumber(ARGV[1])
for i = 2, #ARGV do
  local seq = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if seq and tonumber(seq) <= settled then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
