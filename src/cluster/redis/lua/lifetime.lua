-- Gives keys a lifetime of `ms` milliseconds, or none (0: they live
-- until deleted).
local function set_lifetime(keys, ms)
  for _, key in ipairs(keys) do
    if ms > 0 then
      redis.call('PEXPIRE', key, ms)
    else
      redis.call('PERSIST', key)
    end
  end
end
