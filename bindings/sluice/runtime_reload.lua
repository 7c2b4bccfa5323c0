-- sluice.runtime_reload: hot reload of operator scripts (docs/reload.md).
--
--   w:prepare_reload(script [, src [, chunkname]]) -> true, n | nil, err
--   w:commit_reload(script [, at_barrier])         -> next_timer_ms | -1
--   w:abort_reload(script)
--   w:swap_ready(gid)                              -> next_timer_ms | -1
--   w:version(gid)                                 -> 1 + the reloads swapped in
--
-- prepare: for every instance here whose node runs `script` (absolute path,
-- as in the plan), compile `src` (default: the file's content) in a fresh
-- sandbox and run its open with a staging ctx: the instance's ctx for
-- reading, but emits and timers are held and fields it sets are kept aside.
-- Nothing the running version uses is touched. commit: swap the prepared
-- version in now, or (at_barrier) mark it ready, to be swapped by
-- swap_ready(gid) when the core sees the next checkpoint barrier pass the
-- instance. abort: drop what prepare built. The swap gives the instance
-- its new op, a new copy of the batch loop and the fields open set on the
-- staging ctx, and runs op.migrate over its state; the held emits and
-- timers go out with the instance's next batch (release_held, which
-- sluice.runtime's on_batch and on_end call).
--
-- sluice.runtime installs these methods on its Worker and hands them the
-- internals they use (install, at the end).

local heap = require("sluice.runtime_heap")
local sandbox = require("sluice.runtime_sandbox")

local type, pcall, error, next, rawset, setmetatable, format =
      type, pcall, error, next, rawset, setmetatable, string.format
local heap_rebuild, instance_env = heap.rebuild, sandbox.instance_env

local M = {}

-- From sluice.runtime, set by install.
local get_inst, next_timer, flush_all, on_error, add_timer, check_timer,
      op_of_chunk, make_run_records, errstr

local W = {}

-- ctx for a prepared version's open: reads fall through to the live ctx
-- (params, instance, log, ...) with key = nil, time = now; emit and timer
-- are recorded in `held`; fields open sets stay in the staging table.
local function staging_ctx(inst, op, now, held)
  local real = inst.ctx
  local function emit(_, v, k, t)
    if t == nil then t = now end
    if type(t) ~= "number" then error("ctx:emit: time must be a number (ms)", 2) end
    held[#held + 1] = { v, k, t }
  end
  local function timer(_, t, domain)
    check_timer(t, domain, op.timer)
    held[#held + 1] = { timer = t }
  end
  return setmetatable({}, { __index = function(_, k)
    if k == "emit" then return emit end
    if k == "timer" then return timer end
    if k == "key" then return nil end
    if k == "time" then return now end
    if k == "state" then
      local st = inst.nil_state
      if st == nil then st = {}; inst.nil_state = st end
      return st
    end
    return real[k]
  end })
end

local function script_name(inst)
  local cn = inst.node.chunkname
  if type(cn) == "string" and cn:sub(1, 1) == "@" then return cn:sub(2) end
  return inst.node.script
end

function W:prepare_reload(script, src, chunkname)
  local list = {}
  for _, inst in ipairs(self.order) do
    if inst.node.script == script then
      inst.prepared = nil
      if not inst.closed then list[#list + 1] = inst end
    end
  end
  if #list == 0 then return true, 0 end
  local where = script_name(list[1])
  if chunkname then where = chunkname:gsub("^@", "") end
  if src == nil then
    local f, ferr = io.open(script, "rb")
    if not f then return nil, format("%s: cannot read: %s", where, errstr(ferr)) end
    src = f:read("*a")
    f:close()
  end
  chunkname = chunkname or ("@" .. where)
  local now = self.port.now()
  local prepared = {}
  for i, inst in ipairs(list) do
    local env = instance_env(self, inst.node, inst.component)
    local chunk, cerr = load(src, chunkname, "t", env)
    if not chunk then return nil, errstr(cerr) end
    local op, oerr = op_of_chunk(inst.node, chunk, where)
    if not op then return nil, oerr end
    local held = {}
    local sctx = staging_ctx(inst, op, now, held)
    if op.open then
      local ok, err = pcall(op.open, sctx)
      if not ok then
        return nil, format("%s (in open of %s)", errstr(err), inst.component)
      end
    end
    prepared[i] = { op = op, env = env, ctx = sctx, held = held, where = where }
  end
  for i, inst in ipairs(list) do inst.prepared = prepared[i] end
  return true, #list
end

-- Emits and timers that a reloaded version's open asked for.
local function release_held(w, inst)
  local held = inst.held
  inst.held = nil
  local ctx = inst.ctx
  ctx.key = nil
  ctx.state = nil
  for _, h in ipairs(held) do
    if h.timer then
      add_timer(w, inst, nil, h.timer)
    else
      ctx.time = h[3]
      local ok, err = pcall(ctx.emit, ctx, h[1], h[2], h[3])
      if not ok then on_error(w, inst, err, h[1], h[2], h[3]) end
    end
  end
end
M.release_held = release_held

local function swap(w, inst, p)
  local op = p.op
  inst.op, inst.env = op, p.env
  inst.process, inst.timer = op.process, op.timer
  inst.run_records = make_run_records(inst)
  inst.version = inst.version + 1
  local ctx = inst.ctx
  for k, v in next, p.ctx do
    if k ~= "key" and k ~= "time" and k ~= "state" then ctx[k] = v end
  end
  rawset(ctx, "state", nil)
  if op.timer == nil and next(inst.tset) ~= nil then
    w.port.log(2, inst.component, "the new version has no op.timer: its pending timers are dropped")
    inst.tset = {}
    heap_rebuild(w.heap, function(e) return e[3] ~= inst end)
  end
  local migrate = op.migrate
  if migrate then
    local states = inst.states
    for k, st in next, states do
      local ok, r = pcall(migrate, st, k)
      if not ok then
        on_error(w, inst, "migrate: " .. errstr(r), nil, k, w.port.now())
      elseif type(r) == "table" then
        states[k] = r
      end
    end
    local ns = inst.nil_state
    if ns ~= nil then
      local ok, r = pcall(migrate, ns, nil)
      if not ok then
        on_error(w, inst, "migrate: " .. errstr(r), nil, nil, w.port.now())
      elseif type(r) == "table" then
        inst.nil_state = r
      end
    end
  end
  w.port.log(1, "reload", format("operator %s[%d] now runs %s (version %d)",
    inst.name, inst.index, p.where, inst.version))
  if #p.held > 0 then inst.held = p.held end
end

function W:commit_reload(script, at_barrier)
  for _, inst in ipairs(self.order) do
    local p = inst.prepared
    if inst.node.script == script and p then
      inst.prepared = nil
      if at_barrier then
        inst.swap_ready = p
      else
        inst.swap_ready = nil
        swap(self, inst, p)
        if inst.held then release_held(self, inst) end
      end
    end
  end
  flush_all(self)
  return next_timer(self)
end

function W:abort_reload(script)
  for _, inst in ipairs(self.order) do
    if inst.node.script == script then inst.prepared = nil end
  end
end

-- The core saw a checkpoint barrier pass instance gid (after its snapshot):
-- a committed version waiting for it is swapped in now. Emits its open
-- asked for go out with the instance's next batch.
function W:swap_ready(gid)
  local inst = self.insts[gid]
  local p = inst and inst.swap_ready
  if p then
    inst.swap_ready = nil
    swap(self, inst, p)
  end
  flush_all(self)
  return next_timer(self)
end

-- The version an instance runs (1 + the reloads swapped in).
function W:version(gid)
  return get_inst(self, gid, "version").version
end

-- Adds the methods above to sluice.runtime's Worker; `rt` holds what they
-- use of it.
function M.install(Worker, rt)
  get_inst, next_timer, flush_all, on_error = rt.get_inst, rt.next_timer, rt.flush_all, rt.on_error
  add_timer, check_timer = rt.add_timer, rt.check_timer
  op_of_chunk, make_run_records, errstr = rt.op_of_chunk, rt.make_run_records, rt.errstr
  for name, f in next, W do Worker[name] = f end
end

return M
