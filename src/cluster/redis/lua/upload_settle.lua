-- Moves a pending upload to finished or rejected, once: the first caller
-- wins, and a record that expired is not brought back without a lifetime.
-- KEYS[1]  the record (hash), KEYS[2] its logs (set)
-- ARGV[1]  the new state, ARGV[2] inline (0/1), ARGV[3] lifetime (ms)
-- Returns 1 when moved, 0 when it was not pending (or is gone).
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'inline', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
