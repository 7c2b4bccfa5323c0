-- split.lua: one line in, one record per word out.
-- Each word is lowercased, stripped of punctuation at its ends, and emitted
-- with itself as the key, so that a `grouping = "key"` downstream sends
-- every occurrence of a word to the same instance.
local lower, gmatch, match = string.lower, string.gmatch, string.match

local op = {}

function op.process(ctx, line)
  for w in gmatch(line, "%S+") do
    -- keep inner apostrophes and hyphens ("miller's", "well-kept")
    w = match(lower(w), "^%p*(.-)%p*$")
    if w ~= "" then ctx:emit(w, w) end
  end
end

return op
