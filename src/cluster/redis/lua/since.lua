-- The newest kept entries after an id, the newest id ever trimmed away (so
-- the caller can tell whether messages after its id were lost to the cap),
-- and the oldest kept id (so it can tell whether the history still reaches
-- back to its id).
-- KEYS[1]  the history stream
-- KEYS[2]  the newest trimmed id (written by append.lua)
-- ARGV[1]  the id to read after
-- ARGV[2]  how many entries at most
-- Returns { newest trimmed id or "0-0", oldest kept id or "", entries newest
-- first, 1 when there were more entries than asked for else 0 }.
local trimmed = redis.call('GET', KEYS[2]) or '0-0'
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local limit = tonumber(ARGV[2])
local found = redis.call('XREVRANGE', KEYS[1], '+', '(' .. ARGV[1], 'COUNT', limit + 1)
local more = 0
if #found > limit then
  found[#found] = nil
  more = 1
end
return { trimmed, oldest[1] and oldest[1][1] or '', found, more }
