-- Rewrites this node's contributions from its own ledger (what its open
-- sockets amount to), after Redis lost them, a write failed, or the node
-- started under an id an earlier process used: entries of another
-- incarnation go, entries no newer than the snapshot take its count, newer
-- ones stay. Tallies move by the differences, and every user whose room
-- tally crosses zero is returned, so the caller announces joins and leaves.
-- KEYS[1]  the node's contributions
-- ARGV[1]  the key prefix (tallies are <prefix>room:<room>:members, <prefix>online)
-- ARGV[2]  the incarnation, ARGV[3] the snapshot's sequence number
-- ARGV[4…] pairs: entry ("r:<room>:<user>" or "u:<user>"), connections
-- Returns a flat list: sign ("+" joined, "-" left), room, user, …
local prefix, inc, snap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local changes = {}
local function tally(entry, delta)
  if delta == 0 then return end
  local kind, rest = string.sub(entry, 1, 1), string.sub(entry, 3)
  if kind == 'u' then
    local n = redis.call('HINCRBY', prefix .. 'online', rest, delta)
    if n <= 0 then redis.call('HDEL', prefix .. 'online', rest) end
    return
  end
  local sep = string.find(rest, ':', 1, true)
  local room, user = string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
  local members = prefix .. 'room:' .. room .. ':members'
  local before = tonumber(redis.call('HGET', members, user) or '0')
  local after = redis.call('HINCRBY', members, user, delta)
  if after <= 0 then
    redis.call('HDEL', members, user)
  end
  if before <= 0 and after > 0 then
    redis.call('HINCRBY', prefix .. 'rooms:active', room, 1)
    table.insert(changes, '+'); table.insert(changes, room); table.insert(changes, user)
  elseif before > 0 and after <= 0 then
    if redis.call('HINCRBY', prefix .. 'rooms:active', room, -1) <= 0 then
      redis.call('HDEL', prefix .. 'rooms:active', room)
    end
    table.insert(changes, '-'); table.insert(changes, room); table.insert(changes, user)
  end
end
local wanted = {}
for i = 4, #ARGV, 2 do
  wanted[ARGV[i]] = tonumber(ARGV[i + 1])
end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  local entry = old[i]
  if entry ~= '_floor' then
    local n, i_inc, seq = parse(old[i + 1])
    if i_inc == inc and seq > snap then
      -- Written after the snapshot: already the truth.
      wanted[entry] = nil
    else
      local target = wanted[entry] or 0
      wanted[entry] = nil
      tally(entry, target - n)
      if target > 0 then
        redis.call('HSET', KEYS[1], entry, target .. '/' .. inc .. '/' .. snap)
      else
        redis.call('HDEL', KEYS[1], entry)
      end
    end
  end
end
for entry, n in pairs(wanted) do
  tally(entry, n)
  redis.call('HSET', KEYS[1], entry, n .. '/' .. inc .. '/' .. snap)
end
redis.call('HSET', KEYS[1], '_floor', '0/' .. inc .. '/' .. snap)
return changes
