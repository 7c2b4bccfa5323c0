-- W2 split: the same gmatch loop as baseline_w2_count.lua's count(); each
-- word is emitted keyed by itself for the key grouping to the counters.
local gmatch = string.gmatch

local op = {}

function op.process(ctx, line)
  for w in gmatch(line, "%S+") do ctx:emit(w, w) end
end

return op
