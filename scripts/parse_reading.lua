-- parse_reading.lua: "SENSOR VALUE" lines to "SENSOR VALUE UNIT", keyed by
-- sensor. A malformed line raises an error: the operator's on_error setting
-- decides what happens to it (see conf/errors.conf).
local match, tonumber, format = string.match, tonumber, string.format

local op = {}

function op.process(ctx, line)
  local sensor, raw = match(line, "^(%S+)%s+(%S+)$")
  if not sensor then
    error("expected 'SENSOR VALUE', got " .. format("%q", line))
  end
  local v = tonumber(raw)
  if not v then
    error("value is not a number: " .. raw)
  end
  ctx:emit(format("%s %.2f %s", sensor, v, ctx.params.unit or ""), sensor, ctx.time)
end

return op
