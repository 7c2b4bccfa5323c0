-- W1 map: the same per-record code as baseline_w1_map.lua's map().
local match, upper, tonumber = string.match, string.upper, tonumber

local op = {}

function op.process(ctx, line)
  local user, ev, val = match(line, "^%d+ (%S+) (%S+) (%d+)")
  ctx:emit(user .. " " .. upper(ev) .. " " .. tonumber(val) * 2)
end

return op
