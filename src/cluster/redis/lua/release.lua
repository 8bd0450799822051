-- Ends the reaping of a node whose entries are all gone.
-- KEYS[1]  the nodes being reaped, KEYS[2] the node's rooms; ARGV[1] the node id
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
