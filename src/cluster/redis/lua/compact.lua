-- Compacts this node's entries in one group: every write of this
-- incarnation up to `settled` has finished, so older writes can no longer
-- arrive; the floor rises to it and the zero entries it guarded go. A group
-- left with nothing but its floor is deleted.
-- KEYS[1]  this node's entries in the group
-- ARGV[1]  the incarnation, ARGV[2] the settled sequence number
-- Returns 1 when the group's entries are gone.
local inc, settled = ARGV[1], tonumber(ARGV[2])
local _, floor_inc, floor_seq = parse(redis.call('HGET', KEYS[1], '_floor'))
if floor_inc ~= inc or floor_seq < settled then
  redis.call('HSET', KEYS[1], '_floor', '0/' .. inc .. '/' .. settled)
end
local entries = redis.call('HGETALL', KEYS[1])
local kept = 0
for i = 1, #entries, 2 do
  if entries[i] ~= '_floor' then
    local n, e_inc, seq = parse(entries[i + 1])
    if n == 0 and (e_inc ~= inc or seq <= settled) then
      redis.call('HDEL', KEYS[1], entries[i])
    else
      kept = kept + 1
    end
  end
end
if kept == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
