-- Counts one more pending upload of a user, unless the user has as many
-- pending as allowed. Entries past their deadline no longer count.
-- KEYS[1]  the user's pending uploads (zset: id -> deadline ms)
-- ARGV[1]  the upload id, ARGV[2] now (ms), ARGV[3] its deadline (ms),
-- ARGV[4]  the most pending allowed, ARGV[5] the key's lifetime (ms)
-- Returns 1 when counted, 0 when the user is at the bound.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
