-- sluice.runtime_heap: the timer heap of a worker.
--
-- A binary min-heap of entries { t, seq, inst, key }, ordered by (t, seq):
-- the due time in ms, then the order the timers were set in. sluice.runtime
-- keeps one per worker (w.heap): ctx:timer pushes (after deduplicating per
-- instance and key, which is the runtime's), on_timer pops what is due, and
-- an instance whose input ended, whose state is restored or whose new
-- version has no op.timer has its entries dropped with rebuild.

local tclear = require("table.clear")

local floor = math.floor

local M = {}

local function h_less(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end

-- Adds entry e.
local function heap_push(h, e)
  local n = #h + 1
  h[n] = e
  while n > 1 do
    local p = floor(n / 2)
    if h_less(h[n], h[p]) then
      h[n], h[p] = h[p], h[n]
      n = p
    else
      break
    end
  end
end
M.push = heap_push

-- Removes and returns the first entry (nil when empty).
local function heap_pop(h)
  local n = #h
  if n == 0 then return nil end
  local top = h[1]
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and h_less(h[l], h[m]) then m = l end
    if r <= n and h_less(h[r], h[m]) then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end
M.pop = heap_pop

-- Keeps only the entries e for which keep(e) is true.
function M.rebuild(h, keep)
  local all = {}
  for i = 1, #h do all[i] = h[i] end
  tclear(h)
  for i = 1, #all do
    if keep(all[i]) then heap_push(h, all[i]) end
  end
end

return M
