-- Shared by the presence scripts (prepended to each at build time): a node's
-- contribution entry is "count/incarnation/seq" (see presence_set.lua).
-- Returns count, incarnation, seq; a missing or foreign value reads as
-- nothing counted and older than any write.
local function parse(v)
  if not v then return 0, '', -1 end
  local n, inc, seq = string.match(v, '^(%d+)/([^/]*)/(%d+)$')
  if not n then return 0, '', -1 end
  return tonumber(n), inc, tonumber(seq)
end
