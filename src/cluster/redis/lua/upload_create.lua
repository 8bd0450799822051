-- Stores a new upload record with its lifetime, in one step, so the record
-- never exists without one.
-- KEYS[1]  the record (hash)
-- ARGV[1]  lifetime (ms), then field, value, field, value...
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
