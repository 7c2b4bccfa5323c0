-- count.lua: counts records per key; emits "word count" totals at the end.
-- ctx.state is this key's table (one per distinct word); close runs once per
-- instance when the input has ended and walks this instance's keys.
local op = {}

function op.process(ctx, _)
  local st = ctx.state
  st.n = (st.n or 0) + 1
end

function op.close(ctx)
  for key, st in ctx:each_state() do
    ctx:emit(key .. " " .. st.n, key)
  end
end

return op
