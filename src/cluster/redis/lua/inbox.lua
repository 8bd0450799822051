-- Delivers a DM pair's messages to one of its two users, in the pair's
-- history order: adds them to the user's inbox (the stream the user's
-- channel is gap-filled from) and publishes each on the user's channel. The
-- user's cursor for the pair (the newest id delivered) moves only from the
-- value the caller read, so concurrent deliveries of one pair (its two users
-- sending at once, on different nodes) cannot overtake each other: the one
-- that finds the cursor moved reads the pair's history again and retries.
-- KEYS[1]  the user's inbox (stream: `m` "<pair>/<id>", `f` the frame)
-- KEYS[2]  the user's cursors (hash: pair -> newest id delivered)
-- ARGV[1]  the pair, ARGV[2] the cursor the caller expects ("" = none yet)
-- ARGV[3]  the inbox's cap, ARGV[4] its and the cursors' lifetime, ms
-- ARGV[5]  the publish command, ARGV[6] the user's channel
-- ARGV[7…] pairs: id, frame — the pair's messages after the cursor, in order
-- Returns { "ok" } when delivered (or delivered already), { "moved", cursor }.
local function newer(a, b)
  if b == '' then return true end
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms > b_ms or (a_ms == b_ms and tonumber(a_seq) > tonumber(b_seq))
end
local pair = ARGV[1]
local cursor = redis.call('HGET', KEYS[2], pair) or ''
local last = ARGV[#ARGV - 1]
if cursor ~= '' and not newer(last, cursor) then
  return { 'ok' }
end
if cursor ~= ARGV[2] then
  return { 'moved', cursor }
end
for i = 7, #ARGV, 2 do
  local id, frame = ARGV[i], ARGV[i + 1]
  if newer(id, cursor) then
    local position = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', pair .. '/' .. id, 'f', frame)
    redis.call(ARGV[5], ARGV[6], position .. '\n' .. id .. '\n\n' .. frame)
    cursor = id
  end
end
redis.call('HSET', KEYS[2], pair, cursor)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return { 'ok' }
