-- Deletes one message from a history and, if it was there, tells the room
-- in the same step, so no reader finds it in the history after the event.
-- KEYS[1]  the history stream
-- KEYS[2]  the archive mark (with an archive; else any key of the log)
-- KEYS[3]  the ids deleted while they waited for the archive (set; with an
--          archive)
-- KEYS[4]  the newest id trimmed from the stream
-- ARGV[1]  the message id
-- ARGV[2]  the publish command (PUBLISH, or SPUBLISH on a cluster)
-- ARGV[3]  the envelope of the `deleted` event
-- ARGV[4]  "1" with an archive
-- ARGV[5]  how long the history lives while messages wait, ms (0: forever)
-- ARGV[6]  the history's ordinary lifetime, ms (0: forever)
-- ARGV[7…] the channels to publish on
-- Returns { 1 when the message was in the stream, 1 when it still waited
-- for the archive }. A waiting one may be in an archiver's hands already:
-- its id is kept for archived.lua, which hands it to the archiver to
-- remove from the archive after storing.
local removed = redis.call('XDEL', KEYS[1], ARGV[1])
local waiting = 0
if removed == 1 and ARGV[4] == '1' then
  local mark = redis.call('GET', KEYS[2])
  if mark and mark ~= '-' and later(ARGV[1], mark) then
    waiting = 1
    redis.call('SADD', KEYS[3], ARGV[1])
    set_lifetime({ KEYS[3] }, tonumber(ARGV[5]))
    local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    if not (newest[1] and later(newest[1][1], mark)) then
      -- It was the last one waiting: none does now (as archived.lua).
      redis.call('SET', KEYS[2], '-')
      set_lifetime({ KEYS[1], KEYS[4], KEYS[2] }, tonumber(ARGV[6]))
    end
  end
end
if removed == 1 then
  for i = 7, #ARGV do
    redis.call(ARGV[2], ARGV[i], ARGV[3])
  end
end
return { removed, waiting }
