-- The messages of a history that wait for the archive, oldest first.
-- KEYS[1]  the history stream
-- KEYS[2]  the archive mark (append.lua): "-" when none waits, else the
--          newest id the archive holds
-- ARGV[1]  how many at most
-- Returns the stream entries after the mark, none when none waits.
local mark = redis.call('GET', KEYS[2])
if not mark or mark == '-' then
  return {}
end
return redis.call('XRANGE', KEYS[1], '(' .. mark, '+', 'COUNT', ARGV[1])
