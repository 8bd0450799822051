-- Records that a log carries an upload, if the sender made it and it is
-- finished, and renews the lifetime of the record and its logs.
-- KEYS[1]  the record (hash), KEYS[2] its logs (set)
-- ARGV[1]  the sender, ARGV[2] the log's tag, ARGV[3] lifetime (ms)
-- Returns 1 when attached, 0 when it is not the sender's finished upload.
local record = redis.call('HMGET', KEYS[1], 'uploader', 'state')
if record[1] ~= ARGV[1] or record[2] ~= 'finished' then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
