-- upper.lua: each line upper-cased, key and time passed through.
local upper = string.upper

local op = {}

function op.process(ctx, line)
  ctx:emit(upper(line), ctx.key, ctx.time)
end

return op
