-- sluice.runtime_snapshot: an instance's keyed state and timers as bytes,
-- and back.
--
-- The worker methods that save and restore what an operator instance
-- keeps between records: its state tables (per key, and the nil key's)
-- and its pending timers, string.buffer-encoded.
--   w:snapshot(gid) / w:restore(gid, bytes)   the whole instance, one blob
--   w:snapshot_groups(gid) / w:restore_groups(gid, list)
--                                             by key group: the checkpoints'
-- Key groups (group = hash(key) % max_parallelism, as the key grouping
-- routes) let a pipeline restored with another parallelism find every key;
-- docs/checkpoints.md. sluice.runtime installs these methods on its Worker
-- and hands them the few internals they use (install, at the end).

local buffer = require("string.buffer")
local tclear = require("table.clear")
local heap = require("sluice.runtime_heap")

local type, tostring, pcall, error, next, rawset, format =
      type, tostring, pcall, error, next, rawset, string.format
local heap_rebuild = heap.rebuild

local M = {}

-- From sluice.runtime, set by install.
local get_inst, add_timer, errstr, NILKEY

local W = {}

-- Snapshot of one instance's keyed state and pending timers, as bytes
-- (string.buffer encoded): { v = 1, states = { [key] = state },
-- nil_state = state|nil, timers = { { t = ms, key = key|nil }, ... } }.
-- Empty state tables are left out.
function W:snapshot(gid)
  local inst = get_inst(self, gid, "snapshot")
  local states = {}
  for k, s in next, inst.states do
    if next(s) ~= nil then states[k] = s end
  end
  local ns = inst.nil_state
  if ns and next(ns) == nil then ns = nil end
  local timers, n = {}, 0
  for slot, set in next, inst.tset do
    local key = slot
    if key == NILKEY then key = nil end
    for t in next, set do
      n = n + 1
      timers[n] = { t = t, key = key }
    end
  end
  table.sort(timers, function(a, b) return a.t < b.t end)
  return buffer.encode({ v = 1, states = states, nil_state = ns, timers = timers })
end

-- Replaces one instance's keyed state and timers with a snapshot.
function W:restore(gid, bytes)
  local inst = get_inst(self, gid, "restore")
  local ok, snap = pcall(buffer.decode, bytes)
  if not ok or type(snap) ~= "table" or snap.v ~= 1 then
    error(format("restore: %s: not a sluice state snapshot (%s)", inst.component,
                 ok and "bad shape" or errstr(snap)), 0)
  end
  local states = inst.states
  tclear(states)
  for k, s in next, snap.states or {} do states[k] = s end
  inst.nil_state = snap.nil_state
  rawset(inst.ctx, "state", nil)
  inst.tset = {}
  heap_rebuild(self.heap, function(e) return e[3] ~= inst end)
  for _, tm in ipairs(snap.timers or {}) do
    add_timer(self, inst, tm.key, tm.t)
  end
  return true
end

-- Checkpoints: keyed state and timers by key group, so that a pipeline
-- restored with another parallelism finds every key (Flink's key groups:
-- group = hash(key) % max_parallelism, as the key grouping routes it).
local function key_group(w, key)
  local s = key
  if type(s) ~= "string" then
    if s == nil then s = "" else s = tostring(s) end
  end
  return w.port.hash(s) % w.max_parallelism
end

-- { [group] = bytes } for one instance (groups without state are absent).
function W:snapshot_groups(gid)
  local inst = get_inst(self, gid, "snapshot")
  local groups = {}
  local function group(key)
    local kg = key_group(self, key)
    local g = groups[kg]
    if not g then
      g = { v = 1, states = {}, timers = {} }
      groups[kg] = g
    end
    return g
  end
  for k, s in next, inst.states do
    if next(s) ~= nil then group(k).states[k] = s end
  end
  local ns = inst.nil_state
  if ns and next(ns) ~= nil then group(nil).nil_state = ns end
  for slot, set in next, inst.tset do
    local key = slot
    if key == NILKEY then key = nil end
    local timers = group(key).timers
    for t in next, set do timers[#timers + 1] = { t = t, key = key } end
  end
  local out, enc = {}, self.enc
  for kg, g in next, groups do
    enc:reset()
    enc:encode(g)
    out[kg] = enc:tostring()
  end
  enc:reset()
  return out
end

-- Adds the key groups in `list` (bytes from snapshot_groups) to an instance.
function W:restore_groups(gid, list)
  local inst = get_inst(self, gid, "restore")
  local states = inst.states
  for _, bytes in ipairs(list) do
    local ok, g = pcall(buffer.decode, bytes)
    if not ok or type(g) ~= "table" or g.v ~= 1 then
      error(format("restore: %s: not a sluice key-group snapshot (%s)",
                   inst.component, ok and "bad shape" or errstr(g)), 0)
    end
    for k, st in next, g.states or {} do states[k] = st end
    if g.nil_state then inst.nil_state = g.nil_state end
    for _, tm in ipairs(g.timers or {}) do add_timer(self, inst, tm.key, tm.t) end
  end
  rawset(inst.ctx, "state", nil)
  return true
end

-- Adds the methods above to sluice.runtime's Worker; `rt` holds what they
-- use of it: get_inst, add_timer, errstr, NILKEY.
function M.install(Worker, rt)
  get_inst, add_timer, errstr, NILKEY = rt.get_inst, rt.add_timer, rt.errstr, rt.NILKEY
  for name, f in next, W do Worker[name] = f end
end

return M
