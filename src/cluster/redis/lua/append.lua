-- Appends one message to a capped history stream and publishes it, atomically,
-- so every subscriber sees messages in stream (history) order. With an
-- idempotency key already used, nothing is stored or published: the original
-- message is returned instead.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest id trimmed from it (string), for `since` truncation
-- KEYS[3]  the idempotency key's record (used when ARGV[5] is "1")
-- KEYS[4]  the archive mark (used with an archive; any existing key of the
--          log without one): "-" when no message waits for the archive,
--          else the newest id it holds. It exists from a log's first message
--          on, so a slot migration never finds the script's keys half moved
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
-- ARGV[10] "" without an archive; with one, how long the history lives while
--          messages wait for it, ms ("0": forever). A message the archive
--          lacks is never trimmed (archived.lua trims as it catches up)
-- ARGV[11] with an archive: how many messages over the cap may wait; past
--          it the send is refused
-- ARGV[12…] the channels to publish on (in the stream's slot on a cluster)
-- Returns { id, previous id ("" for the first, or not asked) } for a new
-- message, { id, "", frame } for a replay, { "late" } past the deadline,
-- { "full" } when too many messages wait for the archive.
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
local archiving = ARGV[10] ~= ''
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local previous = newest[1] and newest[1][1] or ''
local cap = tonumber(ARGV[1])
-- Some message waits for the archive already: trimming is the archiver's.
local mark = archiving and redis.call('GET', KEYS[4])
local waiting = mark and mark ~= '-'
if waiting and redis.call('XLEN', KEYS[1]) >= cap + tonumber(ARGV[11]) then
  return { 'full' }
end
if archiving and not waiting then
  -- None waited, so the archive holds every message before this one.
  redis.call('SET', KEYS[4], newest[1] and previous or '0-0')
end
local id
if waiting then
  id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 's', ARGV[3])
else
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
  -- Waiting now: the lifetime is the longer one while the archive catches up.
  set_lifetime({ KEYS[1], KEYS[2], KEYS[4] }, tonumber(ARGV[10]))
elseif ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], id .. '\n' .. frame, 'PX', ARGV[6])
end
local envelope = id .. '\n\n\n' .. frame
for i = 12, #ARGV do
  redis.call(ARGV[7], ARGV[i], envelope)
end
return { id, previous }
