-- Every kept entry after an id, and the newest id ever trimmed away, so the
-- caller can tell whether messages after its id were lost to the cap.
-- KEYS[1]  the history stream
-- KEYS[2]  the newest trimmed id (written by append.lua)
-- ARGV[1]  the id to read after
-- Returns { newest trimmed id or "0-0", entries }.
local trimmed = redis.call('GET', KEYS[2]) or '0-0'
return { trimmed, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+') }
