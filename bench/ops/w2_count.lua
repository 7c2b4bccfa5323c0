-- W2 count: one counter per word in ctx.state (the baseline's counts[w]);
-- "word count" lines at end of input.
local op = {}

function op.process(ctx, _)
  local st = ctx.state; st.n = (st.n or 0) + 1
end

function op.close(ctx)
  for w, st in ctx:each_state() do
    ctx:emit(w .. " " .. st.n, w)
  end
end

return op
