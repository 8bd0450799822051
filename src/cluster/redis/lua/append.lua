-- Appends one message to a capped history stream and publishes it, atomically,
-- so every subscriber sees messages in stream (history) order. With an
-- idempotency key already used, nothing is stored or published: the original
-- message is returned instead.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest id trimmed from it (string), for `since` truncation
-- KEYS[3]  the idempotency key's record (used when ARGV[6] is "1")
-- KEYS[4…] for a DM pair: each user's partner index (zset: partner -> ms of
--          the last DM), which the subscriber's gap fill reads
-- ARGV[1]  the cap
-- ARGV[2]  the encoded message before its id
-- ARGV[3]  the encoded message after its id
-- ARGV[4]  the history's lifetime after this message, ms (0 = forever)
-- ARGV[5]  the DM pair tag carried by publications ("" for rooms)
-- ARGV[6]  "1" when the send carries an idempotency key
-- ARGV[7]  how long an idempotency key is remembered, ms
-- ARGV[8]  the number of partner indexes (KEYS[4…]), k
-- ARGV[9 … 8+k]  the partner recorded in each index
-- ARGV[9+k …]    the channels to publish on
-- Returns { id } for a new message, { id, frame } for a replay.
local partner_indexes = tonumber(ARGV[8])
if ARGV[6] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local newline = string.find(seen, '\n', 1, true)
    return { string.sub(seen, 1, newline - 1), string.sub(seen, newline + 1) }
  end
end
local cap = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len >= cap then
  -- Redis does not record ids trimmed by MAXLEN, so note the newest one here.
  local doomed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - cap + 1)
  redis.call('SET', KEYS[2], doomed[#doomed][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'p', ARGV[2], 's', ARGV[3])
local frame = ARGV[2] .. id .. ARGV[3]
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if ARGV[6] == '1' then
  redis.call('SET', KEYS[3], id .. '\n' .. frame, 'PX', ARGV[7])
end
local ms = tonumber(string.match(id, '^(%d+)'))
for i = 1, partner_indexes do
  local index = KEYS[3 + i]
  redis.call('ZADD', index, ms, ARGV[8 + i])
  -- The most recent partners are enough for a gap of seconds.
  redis.call('ZREMRANGEBYRANK', index, 0, -1001)
  if ttl > 0 then
    redis.call('PEXPIRE', index, ttl)
  end
end
local envelope = id .. '\n\n' .. ARGV[5] .. '\n' .. frame
for i = 9 + partner_indexes, #ARGV do
  redis.call('PUBLISH', ARGV[i], envelope)
end
return { id }
