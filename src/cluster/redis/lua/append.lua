-- Appends one message to a capped history stream and publishes it, atomically,
-- so every subscriber sees messages in stream (history) order.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest id trimmed from it (string), for `since` truncation
-- ARGV[1]  the cap
-- ARGV[2]  the encoded message before its id
-- ARGV[3]  the encoded message after its id
-- ARGV[4…] the channels to publish on
-- Returns the new message id.
local cap = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len >= cap then
  -- Redis does not record ids trimmed by MAXLEN, so note the newest one here.
  local doomed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - cap + 1)
  redis.call('SET', KEYS[2], doomed[#doomed][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'p', ARGV[2], 's', ARGV[3])
local envelope = id .. '\n\n' .. ARGV[2] .. id .. ARGV[3]
for i = 4, #ARGV do
  redis.call('PUBLISH', ARGV[i], envelope)
end
return id
