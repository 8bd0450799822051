-- Records that the archive holds a history's messages up to an id: the mark
-- moves up to it, the history trims what is over its cap and archived, and
-- once no message waits the mark says so ("-") and the history's ordinary
-- lifetime starts.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest id trimmed from it
-- KEYS[3]  the archive mark (see backlog.lua)
-- KEYS[4]  the ids deleted while they waited for the archive (set)
-- ARGV[1]  the newest id now in the archive
-- ARGV[2]  the history's cap
-- ARGV[3]  the history's lifetime after its last message, ms (0 = forever)
-- Returns { 1 when no message waits any more else 0, the deleted ids up to
-- ARGV[1] }: the archiver removes those from the archive, then forgets them.
-- Messages deleted while they waited (delete.lua) that the archive may
-- have stored already: those up to ARGV[1].
local deleted = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if not later(id, ARGV[1]) then
    deleted[#deleted + 1] = id
  end
end
local mark = redis.call('GET', KEYS[3])
if not mark or mark == '-' then
  return { 1, deleted }
end
if later(ARGV[1], mark) then
  mark = ARGV[1]
end
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if over > 0 then
  -- Bounded per call; the next calls trim the rest of a long backlog.
  local doomed = redis.call('XRANGE', KEYS[1], '-', mark, 'COUNT', math.min(over, 1000))
  if #doomed > 0 then
    local last = doomed[#doomed][1]
    redis.call('XTRIM', KEYS[1], 'MINID', last)
    redis.call('XDEL', KEYS[1], last)
    redis.call('SET', KEYS[2], last)
  end
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if newest[1] and later(newest[1][1], mark) then
  redis.call('SET', KEYS[3], mark)
  return { 0, deleted }
end
redis.call('SET', KEYS[3], '-')
set_lifetime({ KEYS[1], KEYS[2], KEYS[3] }, tonumber(ARGV[3]))
return { 1, deleted }
