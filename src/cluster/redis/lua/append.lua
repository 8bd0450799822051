-- Appends one message to a capped history stream and publishes it, atomically,
-- so every subscriber sees messages in stream (history) order. With an
-- idempotency key already used, nothing is stored or published: the original
-- message is returned instead.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest id trimmed from it (string), for `since` truncation
-- KEYS[3]  the idempotency key's record (used when ARGV[5] is "1")
-- KEYS[4]  the archive mark (used when ARGV[10] is "1"): while messages wait
--          for the archive, the newest id it holds
-- ARGV[1]  the cap
-- ARGV[2]  the encoded message before its id
-- ARGV[3]  the encoded message after its id
-- ARGV[4]  the history's lifetime after this message, ms (0 = forever)
-- ARGV[5]  "1" when the send carries an idempotency key
-- ARGV[6]  how long an idempotency key is remembered, ms
-- ARGV[7]  the publish command (PUBLISH, or SPUBLISH on a cluster)
-- ARGV[8]  "1" to have the previous message's id returned (DM pairs)
-- ARGV[9]  the latest Redis time (ms) at which the message may still be
--          stored ("0": no limit): past it the node has answered, or will
--          answer, `unavailable`, so it must not be stored (a command held up
--          by a silent network link arrives after the node gave up on it)
-- ARGV[10] "1" with an archive: a message it lacks is never trimmed, and
--          the history does not expire while one waits (archived.lua trims
--          and sets the lifetime as the archive catches up)
-- ARGV[11…] the channels to publish on (in the stream's slot on a cluster)
-- Returns { id, previous id ("" for the first, or not asked) } for a new
-- message, { id, "", frame } for a replay, { "late" } past the deadline.
if too_late(tonumber(ARGV[9])) then
  return { 'late' }
end
if ARGV[5] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local newline = string.find(seen, '\n', 1, true)
    return { string.sub(seen, 1, newline - 1), '', string.sub(seen, newline + 1) }
  end
end
local archiving = ARGV[10] == '1'
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local previous = newest[1] and newest[1][1] or ''
-- Some message waits for the archive already: trimming is the archiver's.
local waiting = archiving and redis.call('EXISTS', KEYS[4]) == 1
if archiving and not waiting then
  -- None waited, so the archive holds every message before this one.
  redis.call('SET', KEYS[4], newest[1] and previous or '0-0')
elseif not archiving then
  -- A mark left by nodes that archived: without them it would never go.
  redis.call('DEL', KEYS[4])
end
local id
if waiting then
  id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 's', ARGV[3])
else
  local cap = tonumber(ARGV[1])
  local len = redis.call('XLEN', KEYS[1])
  if len >= cap then
    -- Redis does not record ids trimmed by MAXLEN, so note the newest one here.
    local doomed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - cap + 1)
    redis.call('SET', KEYS[2], doomed[#doomed][1])
  end
  id = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'p', ARGV[2], 's', ARGV[3])
end
if ARGV[8] ~= '1' then
  previous = ''
end
local frame = ARGV[2] .. id .. ARGV[3]
-- The trimmed-id marker always exists ("0-0": nothing trimmed yet, as
-- `since.lua` reads a missing one): during a slot migration Redis answers
-- TRYAGAIN to a script whose keys are partly moved, so a room whose marker
-- was missing could take no message until the migration ended.
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], '0-0')
end
local ttl = tonumber(ARGV[4])
if archiving then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
elseif ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], id .. '\n' .. frame, 'PX', ARGV[6])
end
local envelope = id .. '\n\n\n' .. frame
for i = 11, #ARGV do
  redis.call(ARGV[7], ARGV[i], envelope)
end
return { id, previous }
