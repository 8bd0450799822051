-- Delivers a stored DM to one of its two users: adds it to the user's inbox
-- (the stream the user's channel is gap-filled from) and publishes it on the
-- user's channel, atomically, so the channel carries the inbox's order.
-- KEYS[1]  the user's inbox (stream: `m` the DM's "<pair>/<id>", `f` its frame)
-- ARGV[1]  the DM's "<pair>/<id>"
-- ARGV[2]  the frame
-- ARGV[3]  "1" when the DM may be in the inbox already (a replayed send):
--          the recent entries are searched for it first
-- ARGV[4]  the inbox's cap, ARGV[5] its lifetime after this DM, ms
-- ARGV[6]  the publish command, ARGV[7] the user's channel
-- Returns the inbox id ("" when it was there already).
if ARGV[3] == '1' then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 100)) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'm' and fields[i + 1] == ARGV[1] then
        return ''
      end
    end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'm', ARGV[1], 'f', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local dm = string.match(ARGV[1], '/(.*)$')
redis.call(ARGV[6], ARGV[7], id .. '\n' .. dm .. '\n\n' .. ARGV[2])
return id
