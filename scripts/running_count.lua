-- running_count.lua: counts records per key and emits the key's new total
-- with every record, keyed by the key (value = the count as text). Made for
-- sinks that overwrite per key (a Redis hash or SET): the last write of a
-- key is its current total, and the input may never end.
local op = {}

function op.process(ctx, _)
  local st = ctx.state
  st.n = (st.n or 0) + 1
  ctx:emit(tostring(st.n), ctx.key)
end

return op
