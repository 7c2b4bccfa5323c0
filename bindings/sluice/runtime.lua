-- sluice.runtime: the Lua side of a worker.
--
-- A worker thread's LuaJIT state loads this module, builds a port over the C
-- API (rt.ffi_port), builds the operator instances pinned to its thread
-- (rt.new_worker) and then calls, through lua_pcall, once per batch (never
-- once per record):
--
--   w:open()                          -> true | nil, err
--   w:on_batch(gid, ptr, len, nrec)   -> next_timer_ms | -1
--   w:on_end(gid, closing)            -> next_timer_ms | -1
--   w:on_timer(now_ms)                -> next_timer_ms | -1
--   w:stats(gid)                      -> { records_in, records_out, errors, dead_letters }
--   w:snapshot(gid) / w:restore(gid, bytes)   (keyed state + timers)
--   w:state(gid, key)                 -> that key's live state table or nil
--
-- The contract (plan shape, batch codec) is docs/architecture.md; the user's
-- view of it is docs/lua-api.md. sluice.testing runs this same code with a
-- one-instance plan and a port written in Lua.
--
-- Hot path (decode -> process -> ctx.state -> emit -> encode) rules: no
-- closure is created per record, no varargs, no NYI builtins in the loops;
-- string.buffer encode/decode run once per batch of up to 1024 records.
-- Three things on that path are there for speed, not for semantics: every
-- instance has its own batch loop (RUN_RECORDS_SRC), key routing caches
-- string key -> channel (make_sender), and batches between operators mark
-- key == value with SAME instead of encoding the same string twice.
--
-- This file is the entry point and holds the hot path: the batch loop,
-- emit, senders, the local exchange, channels and their flushing, error
-- routing, timers as ctx:timer sets them; and the worker's life (open,
-- on_batch, on_end, on_timer). Those functions reach each other through
-- upvalues of this one chunk; keep them together. The cold parts are
-- modules of their own, installed on the worker at the end of this file:
--   runtime_port      the port over the C API (rt.ffi_port)
--   runtime_sandbox   an operator script's globals (rt.make_env)
--   runtime_heap      the timer heap
--   runtime_snapshot  w:snapshot/restore(_groups): state and timers as bytes
--   runtime_json      rt.to_json, w:state_json (the admin API)
--   runtime_reload    hot reload: w:prepare/commit/abort_reload, swap_ready

local ffi = require("ffi")
local buffer = require("string.buffer")
local tnew = require("table.new")
local tclear = require("table.clear")
local jit = require("jit")
local heap = require("sluice.runtime_heap")
local port_mod = require("sluice.runtime_port")
local sandbox = require("sluice.runtime_sandbox")

local type, tostring, pcall, error, next, rawget, rawset, setmetatable,
      select, floor, concat, format =
      type, tostring, pcall, error, next, rawget, rawset, setmetatable,
      select, math.floor, table.concat, string.format

local M = { version = "1" }

-- Records per encoded batch: a pending channel is flushed when it holds this
-- many records, and after every on_batch / on_end / on_timer / open.
local BATCH = 1024
M.BATCH = BATCH
local DEFAULT_MAX_PARALLELISM = 128
-- Keys in the key-routing cache (see make_sender).
local ROUTE_CACHE = 16384

local LEVELS = { debug = 0, info = 1, warn = 2, error = 3 }
M.LEVELS = LEVELS

-- The port over the C API: runtime_port.
M.cdef = port_mod.cdef
M.ffi_port = port_mod.ffi_port

-------------------------------------------------------------------------------
-- Helpers
-------------------------------------------------------------------------------

-- A short, single-line representation of a value for log lines.
local function short_repr(v, depth)
  local tv = type(v)
  if tv == "string" then
    if #v > 60 then v = v:sub(1, 57) .. "..." end
    return format("%q", v):gsub("\\\n", "\\n")
  elseif tv == "table" then
    depth = depth or 0
    if depth > 0 then return "{...}" end
    local parts, n = {}, 0
    for k, x in next, v do
      n = n + 1
      if n > 4 then parts[n] = "..." break end
      if type(k) == "string" then
        parts[n] = k .. "=" .. short_repr(x, depth + 1)
      else
        parts[n] = "[" .. short_repr(k, depth + 1) .. "]=" .. short_repr(x, depth + 1)
      end
    end
    return "{" .. concat(parts, ",") .. "}"
  else
    return tostring(v)
  end
end
M.short_repr = short_repr

local function errstr(e)
  if type(e) == "string" then return e end
  return tostring(e)
end

-- The sandbox: runtime_sandbox.
M.make_env = sandbox.make_env
local instance_env = sandbox.instance_env

-- The timer heap (per worker): runtime_heap.
local heap_push, heap_pop, heap_rebuild = heap.push, heap.pop, heap.rebuild

-------------------------------------------------------------------------------
-- The worker
-------------------------------------------------------------------------------

local W = {}
W.__index = W

-- SAME in a record's key slot means "the key is the value" (k == v). Only
-- batches for an operator's channel use it: decoding a string twice costs a
-- second string interning per record (W2 emits every word keyed by itself).
-- It is the lightuserdata NULL, which string.buffer carries but which no
-- sandboxed script can make, and which C sinks never see.
local SAME = buffer.decode("\3")
assert(type(SAME) == "userdata")
M.SAME = SAME

-- The nil key's timer-dedupe slot (table keys cannot be nil).
local NILKEY = setmetatable({}, { __tostring = function() return "<nil key>" end })

local function flush_chan(w, ch)
  local n = ch.n
  if n == 0 then return end
  local enc = w.enc
  enc:reset()
  local ok, err = pcall(enc.encode, enc, ch.pend)
  if ok then
    w.port.push(ch.cid, enc, n)
  else
    -- A value that the codec cannot carry (a function, a userdata, a table
    -- with a metatable...). Find the culprits record by record, drop them
    -- as errors of the producing instance, send the rest.
    local pend, good, g = ch.pend, tnew(3 * n, 0), 0
    local one = tnew(3, 0)
    for i = 0, n - 1 do
      local v, k, t = pend[3 * i + 1], pend[3 * i + 2], pend[3 * i + 3]
      one[1], one[2], one[3] = v, k, t
      enc:reset()
      local ok1, err1 = pcall(enc.encode, enc, one)
      if ok1 then
        good[3 * g + 1], good[3 * g + 2], good[3 * g + 3] = v, k, t
        g = g + 1
      else
        local inst = ch.inst
        inst.stats.errors = inst.stats.errors + 1
        w.port.log(3, inst.component, format("error: cannot encode emitted record: %s key=%s value=%s",
          errstr(err1), short_repr(k), short_repr(v)))
        if inst.on_error == "stop" and not w.failed then
          w.failed = true
          w.port.fail(4, inst.component .. ": cannot encode emitted record: " .. errstr(err1))
        end
      end
    end
    if g > 0 then
      enc:reset()
      enc:encode(good)
      w.port.push(ch.cid, enc, g)
    end
  end
  tclear(ch.pend)
  ch.n = 0
end

local run_local

local function flush_all(w)
  -- local batches first, upstream first (w.order is topological): running
  -- one may fill a later one, and fill channels
  local order = w.order
  for i = 1, #order do
    local d = order[i]
    if d.ln > 0 then run_local(w, d) end
  end
  local chans = w.chan_list
  for i = 1, #chans do
    local ch = chans[i]
    if ch.n > 0 then flush_chan(w, ch) end
  end
end

local function put(w, ch, v, k, t)
  local n = ch.n
  local pend = ch.pend
  local j = n * 3
  pend[j + 1] = v
  if k ~= nil and rawequal(k, v) and ch.same_ok then k = SAME end
  pend[j + 2] = k
  pend[j + 3] = t
  n = n + 1
  ch.n = n
  if n >= BATCH then flush_chan(w, ch) end
end

-- Error routing for one failed call of an instance.
local function on_error(w, inst, err, v, k, t)
  local msg = errstr(err)
  local st = inst.stats
  st.errors = st.errors + 1
  w.port.log(3, inst.component, format("error: %s key=%s value=%s", msg, short_repr(k), short_repr(v)))
  local policy = inst.on_error
  if policy == "dead_letter" then
    local ch = inst.dead_chan
    if ch then
      if type(t) ~= "number" then t = w.port.now() end
      put(w, ch, { operator = inst.name, error = msg, value = v, key = k, time = t }, k, t)
      st.dead_letters = st.dead_letters + 1
    end
  elseif policy == "stop" then
    if not w.failed then
      w.failed = true
      w.port.fail(4, format("%s: %s", inst.component, msg))
    end
  end
  -- "skip": counted and logged, nothing else
end

-- Runs what a same-worker upstream handed to instance d (deliver): its own
-- batch loop over the pending {v,k,t,...} array, as on_batch does for a
-- channel's batch (one pcall per run, restarted after a failing record).
run_local = function(w, d)
  local n3 = d.ln
  d.ln = 0
  if w.failed or d.closed then return end
  local t = d.lpend
  local nrec = n3 / 3
  local st = d.stats
  st.records_in = st.records_in + nrec
  local port = w.port
  local observe = port.observe
  local t0 = observe and port.hrtime()
  local i = 1
  while i <= nrec do
    local ok, err = pcall(d.run_records, d, t, i, nrec)
    if ok then break end
    local c = d.cur
    local j = 3 * c
    on_error(w, d, err, t[j - 2], t[j - 1], t[j])
    if w.failed then break end
    i = c + 1
  end
  if observe then observe(d.gid, nrec, t0) end
end

-- A same-worker downstream (chained, or a local target of any grouping):
-- the Lua value as is, queued in d's local batch; run when it is full and
-- by flush_all at the end of every call into this worker (so before any
-- barrier, snapshot or swap: nothing is pending between calls).
local function deliver(w, d, v, k, t)
  if w.failed or d.closed then return end
  local n = d.ln
  local lp = d.lpend
  lp[n + 1] = v
  lp[n + 2] = k
  lp[n + 3] = t
  n = n + 3
  d.ln = n
  if n >= 3 * BATCH then run_local(w, d) end
end

-- To a channel (encoded, batched) or a local target (a direct call).
local function send(w, ch, v, k, t)
  local d = ch.direct
  if d then deliver(w, d, v, k, t) else put(w, ch, v, k, t) end
end

-- One sender per out edge: function(v, k, t).
local function make_sender(w, inst, out, out_index, nocache)
  local g = out.grouping or "shuffle"
  if out.chained ~= nil then
    local d = w.insts[out.chained]
    if not d then
      error(format("plan: %s chains to instance %d, which is not on thread %d",
                   inst.component, out.chained, w.thread), 0)
    end
    return function(v, k, t) deliver(w, d, v, k, t) end
  end
  local src = out.channels or {}
  if g == "forward" then
    -- channels[index of the downstream instance]: the one channel i -> i
    local cid = src[inst.index]
    if cid == nil then
      local only, extra = next(src)
      if only ~= nil and next(src, only) == nil then cid = extra end
    end
    if cid == nil then
      error(format("plan: %s has a forward out edge without channel %d", inst.component, inst.index), 0)
    end
    local ch = w:chan(cid, inst)
    return function(v, k, t) put(w, ch, v, k, t) end
  end
  -- Targets by downstream instance index: a channel, or (the instance is on
  -- this worker) a local target called directly with the Lua value.
  local direct = out.direct or {}
  local chans, p = {}, 0
  while src[p] ~= nil or direct[p] ~= nil do
    if src[p] ~= nil then
      chans[p] = w:chan(src[p], inst)
    else
      local d = w.insts[direct[p]]
      if not d then
        error(format("plan: %s calls instance %d, which is not on thread %d",
                     inst.component, direct[p], w.thread), 0)
      end
      chans[p] = { direct = d }
    end
    p = p + 1
  end
  if p == 0 then
    error(format("plan: %s has an out edge (grouping %s) with no channels", inst.component, g), 0)
  end
  if p == 1 then
    local ch = chans[0]
    return function(v, k, t) send(w, ch, v, k, t) end
  end
  if g == "key" then
    local hash = w.port.hash
    local maxp = w.max_parallelism
    local function direct(v, k, t)
      local s = k
      if type(s) ~= "string" then
        if s == nil then s = "" else s = tostring(s) end
      end
      send(w, chans[floor((hash(s) % maxp) * p / maxp)], v, k, t)
    end
    if nocache then return direct end
    -- Hot string keys skip the hash: a cache key -> channel, emptied when
    -- it holds ROUTE_CACHE keys. If by then fewer than half of the records
    -- emitted since the last emptying were hits, most keys are new and the
    -- cache costs more than it saves: the instance's emit is rebuilt
    -- without it (no per-record bookkeeping either way).
    local cache, cached = {}, 0
    local st = inst.stats
    local out_mark = st.records_out
    local function miss(k)
      local ch = chans[floor((hash(k) % maxp) * p / maxp)]
      if cached >= ROUTE_CACHE then
        tclear(cache)
        cached = 0
        if st.records_out - out_mark < 2 * ROUTE_CACHE then
          w.port.log(0, inst.component, "key routing cache off: too many distinct keys")
          inst.nocache[out_index] = true
          w:build_emit(inst)
        end
        out_mark = st.records_out
      end
      cache[k] = ch
      cached = cached + 1
      return ch
    end
    local function sender(v, k, t)
      if type(k) ~= "string" then return direct(v, k, t) end
      local ch = cache[k]
      if ch == nil then ch = miss(k) end
      send(w, ch, v, k, t)
    end
    -- The whole ctx.emit when this is the instance's only out edge: the
    -- emit checks, the cached routing, deliver and put in one closure (the
    -- same steps as make_emit -> sender -> send -> deliver | put, with
    -- fewer calls on the per-record path).
    local function emit(ctx, v, k, t)
      if t == nil then t = ctx.time end
      if type(t) ~= "number" then error("ctx:emit: time must be a number (ms)", 2) end
      st.records_out = st.records_out + 1
      if type(k) ~= "string" then return direct(v, k, t) end
      local ch = cache[k]
      if ch == nil then ch = miss(k) end
      local d = ch.direct
      if d then
        if w.failed or d.closed then return end
        local n = d.ln
        local lp = d.lpend
        lp[n + 1] = v
        lp[n + 2] = k
        lp[n + 3] = t
        n = n + 3
        d.ln = n
        if n >= 3 * BATCH then run_local(w, d) end
      else
        local n = ch.n
        local pend = ch.pend
        local j = n * 3
        pend[j + 1] = v
        if rawequal(k, v) and ch.same_ok then pend[j + 2] = SAME else pend[j + 2] = k end
        pend[j + 3] = t
        n = n + 1
        ch.n = n
        if n >= BATCH then flush_chan(w, ch) end
      end
    end
    return sender, emit
  elseif g == "broadcast" then
    return function(v, k, t)
      for i = 0, p - 1 do send(w, chans[i], v, k, t) end
    end
  elseif g == "shuffle" then
    local rr = { i = 0 }
    return function(v, k, t)
      local i = rr.i
      send(w, chans[i], v, k, t)
      i = i + 1
      if i == p then i = 0 end
      rr.i = i
    end
  else
    error(format("plan: %s: unknown grouping '%s'", inst.component, tostring(g)), 0)
  end
end

-- The channel object of cid, produced by `inst` (each cid has one producer).
function W:chan(cid, inst)
  local ch = self.chan_by_cid[cid]
  if not ch then
    -- same_ok: the consumer is an operator (Lua), which understands SAME.
    local same_ok = false
    local cdesc = self.plan.channels and self.plan.channels[cid]
    if cdesc and cdesc.to ~= nil and self.plan.instances then
      local to = self.plan.instances[cdesc.to]
      local node = to and self.plan.nodes[to.node]
      same_ok = node ~= nil and node.type == "operator"
    end
    ch = { cid = cid, n = 0, pend = tnew(3 * BATCH, 0), inst = inst, same_ok = same_ok }
    self.chan_by_cid[cid] = ch
    self.chan_list[#self.chan_list + 1] = ch
  end
  return ch
end

local function make_emit(w, inst, senders)
  local st = inst.stats
  local n = #senders
  if n == 0 then
    return function(ctx, v, k, t)
      if t == nil then t = ctx.time end
      if type(t) ~= "number" then error("ctx:emit: time must be a number (ms)", 2) end
      st.records_out = st.records_out + 1
    end
  elseif n == 1 then
    local s1 = senders[1]
    return function(ctx, v, k, t)
      if t == nil then t = ctx.time end
      if type(t) ~= "number" then error("ctx:emit: time must be a number (ms)", 2) end
      st.records_out = st.records_out + 1
      s1(v, k, t)
    end
  else
    return function(ctx, v, k, t)
      if t == nil then t = ctx.time end
      if type(t) ~= "number" then error("ctx:emit: time must be a number (ms)", 2) end
      st.records_out = st.records_out + 1
      for i = 1, n do senders[i](v, k, t) end
    end
  end
end

-- (Re)builds ctx.emit of an instance from its out edges.
function W:build_emit(inst)
  local senders, emit = {}, nil
  local outs = inst.desc.outs or {}
  for i, out in ipairs(outs) do
    senders[i], emit = make_sender(self, inst, out, i, inst.nocache[i])
  end
  if #outs ~= 1 or emit == nil then emit = make_emit(self, inst, senders) end
  inst.ctx.emit = emit
end

-- ctx:log(level, ...)
local function make_log(w, inst)
  local port = w.port
  return function(ctx, level, ...)
    local lv = LEVELS[level]
    if lv == nil then
      error(format("ctx:log: unknown level '%s' (debug, info, warn, error)", tostring(level)), 2)
    end
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    port.log(lv, inst.component, concat(parts, " "))
  end
end

local function add_timer(w, inst, key, t)
  local slot = key
  if slot == nil then slot = NILKEY end
  local set = inst.tset[slot]
  if set == nil then
    set = {}
    inst.tset[slot] = set
  elseif set[t] then
    return false
  end
  set[t] = true
  w.tseq = w.tseq + 1
  heap_push(w.heap, { t, w.tseq, inst, key })
  return true
end

-- The checks of ctx:timer(t [, domain]) for an op whose timer function is
-- `timer_fn`; errors are raised at the script's call (level 3).
local function check_timer(t, domain, timer_fn)
  if type(t) ~= "number" or t ~= t then
    error("ctx:timer: time must be a number (ms)", 3)
  end
  if domain ~= nil and domain ~= "processing" then
    error(format("ctx:timer: '%s' timers are not supported yet (processing time only)",
                 tostring(domain)), 3)
  end
  if timer_fn == nil then
    error("ctx:timer: the operator has no timer function (op.timer)", 3)
  end
end

local function make_timer(w, inst)
  return function(ctx, t, domain)
    check_timer(t, domain, inst.timer)
    add_timer(w, inst, rawget(ctx, "key"), t)
  end
end

-- The batch loop: one pcall for the whole batch, restarted after a failing
-- record (inst.cur says which one failed). Each instance gets its own copy,
-- compiled from this source with load(): LuaJIT attaches a loop's trace to
-- the bytecode, so one shared function would give every instance's loop the
-- trace of whichever operator ran first, and the others would take side
-- exits (or fall back to the interpreter) on every record.
local RUN_RECORDS_SRC = [[
local SAME = ...
return function(inst, t, from, nrec)
  local process, ctx, states = inst.process, inst.ctx, inst.states
  for i = from, nrec do
    inst.cur = i
    local j = 3 * i
    local v, k = t[j - 2], t[j - 1]
    if k == SAME then k = v end
    ctx.key = k
    ctx.time = t[j]
    -- an existing key's state is set here; a new key's (or the nil key's)
    -- is made on first use by ctx's __index
    if k ~= nil then ctx.state = states[k] else ctx.state = nil end
    process(ctx, v)
  end
end
]]

-- Runs a compiled chunk and checks what it returns: op, or nil, err.
-- `where` names the script in errors ("scripts/x.lua").
local function op_of_chunk(node, chunk, where)
  if node.jit == false then jit.off(chunk, true) end
  local ok, op = pcall(chunk)
  if not ok then return nil, errstr(op) end
  if type(op) ~= "table" or type(op.process) ~= "function" then
    return nil, where .. ": must return a table with process"
  end
  for _, f in ipairs({ "open", "timer", "close", "migrate" }) do
    if op[f] ~= nil and type(op[f]) ~= "function" then
      return nil, format("%s: op.%s must be a function", where, f)
    end
  end
  if node.jit == false then
    -- The functions of the returned table may come from elsewhere (e.g. a
    -- required module); switch them off too.
    for _, f in ipairs({ "open", "process", "timer", "close", "migrate" }) do
      if op[f] then jit.off(op[f], true) end
    end
  end
  return op
end

-- Each instance's own copy of the batch loop (see RUN_RECORDS_SRC).
local function make_run_records(inst)
  return assert(load(RUN_RECORDS_SRC, "=sluice.runtime(batch loop of " .. inst.component .. ")"))(SAME)
end

local function build_instance(w, plan, idesc)
  local node = plan.nodes[idesc.node]
  if not node then error(format("plan: instance %d has no node %s", idesc.gid, tostring(idesc.node)), 0) end
  local name = node.name or ("node" .. tostring(idesc.node))
  local index = idesc.index or 0
  local inst = {
    gid = idesc.gid, node = node, name = name, index = index,
    component = format("operator %s[%d]", name, index),
    on_error = node.on_error or "skip",
    stats = { records_in = 0, records_out = 0, errors = 0, dead_letters = 0 },
    states = {},     -- key -> state table
    nil_state = nil, -- the state of the nil key
    tset = {},       -- key slot -> { [t] = true }: pending timers (dedupe)
    desc = idesc,
    version = 1,     -- 1 + the reloads swapped in
    lpend = tnew(3 * BATCH, 0), -- records from same-worker upstreams (deliver)
    ln = 0,                      -- 3 x how many
  }
  local env = instance_env(w, node, inst.component)
  local script = node.script
  if type(script) ~= "string" then
    error(format("plan: operator '%s' has no script", name), 0)
  end
  local chunk, cerr = loadfile(script, "t", env)
  if not chunk then error(cerr, 0) end
  local op, oerr = op_of_chunk(node, chunk, script)
  if not op then error(oerr, 0) end
  inst.op, inst.env = op, env
  inst.process, inst.timer = op.process, op.timer

  -- ctx: one table per instance, reused for every call.
  local states = inst.states
  local ctx = {
    key = nil, time = nil,
    params = node.params or {},
    instance = index,
    parallelism = node.parallelism or 1,
    name = name,
  }
  setmetatable(ctx, {
    __index = function(c, k)
      if k ~= "state" then return nil end
      local key = rawget(c, "key")
      local s
      if key == nil then
        s = inst.nil_state
        if s == nil then s = {}; inst.nil_state = s end
      else
        s = states[key]
        if s == nil then s = {}; states[key] = s end
      end
      rawset(c, "state", s)
      return s
    end,
  })
  ctx.log = make_log(w, inst)
  ctx.timer = make_timer(w, inst)
  ctx.each_state = function() return next, states, nil end
  ctx.clear_state = function(c)
    local key = rawget(c, "key")
    if key == nil then inst.nil_state = nil else states[key] = nil end
    rawset(c, "state", nil)
  end
  inst.ctx = ctx
  inst.run_records = make_run_records(inst)
  return inst
end

-- rt.new_worker(plan, thread, port) -> w (raises an error string)
function M.new_worker(plan, thread, port)
  assert(type(plan) == "table", "new_worker: plan must be a table")
  assert(type(port) == "table", "new_worker: port must be a table")
  local w = setmetatable({
    plan = plan, thread = thread, port = port,
    insts = {}, order = {},
    chan_by_cid = {}, chan_list = {},
    heap = {}, tseq = 0,
    failed = false,
    enc = buffer.new(64 * 1024),
    dec = buffer.new(),
    max_parallelism = plan.max_parallelism or DEFAULT_MAX_PARALLELISM,
  }, W)
  local insts = plan.instances or {}
  local n = plan.n_instances
  if n == nil then
    n = 0
    while insts[n] ~= nil do n = n + 1 end
  end
  for g = 0, n - 1 do
    local idesc = insts[g]
    if idesc and idesc.thread == thread then
      local node = plan.nodes[idesc.node]
      if node and (node.type == nil or node.type == "operator") then
        local inst = build_instance(w, plan, idesc)
        w.insts[idesc.gid or g] = inst
        inst.gid = idesc.gid or g
        w.order[#w.order + 1] = inst
      end
    end
  end
  -- upstream first: nodes are in topological order
  table.sort(w.order, function(a, b)
    if a.desc.node ~= b.desc.node then return a.desc.node < b.desc.node end
    return a.index < b.index
  end)
  for _, inst in ipairs(w.order) do
    inst.nocache = {}
    w:build_emit(inst)
    if inst.desc.dead ~= nil then
      inst.dead_chan = w:chan(inst.desc.dead, inst)
    elseif inst.on_error == "dead_letter" then
      port.log(2, inst.component, "on_error = \"dead_letter\" but no dead-letter channel: errors are skipped")
    end
  end
  return w
end

local function next_timer(w)
  local top = w.heap[1]
  if top then return top[1] end
  return -1
end

local function get_inst(w, gid, what)
  local inst = w.insts[gid]
  if not inst then
    error(format("%s: instance %s is not an operator on thread %s", what, tostring(gid), tostring(w.thread)), 0)
  end
  return inst
end

-- Runs op.open on every hosted instance, upstream first.
function W:open()
  local now = self.port.now()
  for _, inst in ipairs(self.order) do
    local op = inst.op
    if op.open then
      local ctx = inst.ctx
      ctx.key = nil
      ctx.time = now
      ctx.state = nil
      local ok, err = pcall(op.open, ctx)
      if not ok then
        flush_all(self)
        return nil, format("operator '%s' open: %s", inst.name, errstr(err))
      end
    end
  end
  flush_all(self)
  return true
end

-- Emits and timers a reloaded version's open asked for (runtime_reload's
-- release_held, set at the end of this file).
local release_held

function W:on_batch(gid, ptr, len, nrec)
  local inst = get_inst(self, gid, "on_batch")
  if self.failed or inst.closed then return next_timer(self) end
  if inst.held then release_held(self, inst) end
  local dec = self.dec
  if type(ptr) == "string" then
    dec:set(ptr)
  elseif type(ptr) == "userdata" then
    dec:set(ffi.cast("const uint8_t *", ptr), len)
  else
    dec:set(ptr, len)
  end
  local t = dec:decode()
  dec:reset()
  if nrec == nil then nrec = floor(#t / 3) end
  local st = inst.stats
  st.records_in = st.records_in + nrec
  local i = 1
  while i <= nrec do
    local ok, err = pcall(inst.run_records, inst, t, i, nrec)
    if ok then break end
    local c = inst.cur
    local j = 3 * c
    local k = t[j - 1]
    if k == SAME then k = t[j - 2] end
    on_error(self, inst, err, t[j - 2], k, t[j])
    if self.failed then break end
    i = c + 1
  end
  flush_all(self)
  return next_timer(self)
end

function W:on_end(gid, closing)
  local inst = get_inst(self, gid, "on_end")
  if inst.held and not self.failed then release_held(self, inst) end
  if closing and not inst.closed and not self.failed then
    inst.closed = true
    local op = inst.op
    if op.close then
      local ctx = inst.ctx
      local now = self.port.now()
      ctx.key = nil
      ctx.time = now
      ctx.state = nil
      local ok, err = pcall(op.close, ctx)
      if not ok then on_error(self, inst, err, nil, nil, now) end
    end
    -- the input ended: this instance's pending timers will never fire
    inst.tset = {}
    heap_rebuild(self.heap, function(e) return e[3] ~= inst end)
  end
  flush_all(self)
  return next_timer(self)
end

function W:on_timer(now)
  local heap = self.heap
  local due, n = nil, 0
  -- Collect what is due first: a timer set (again) while firing waits for
  -- the next call, so a script cannot keep the worker in here forever.
  while heap[1] and heap[1][1] <= now do
    local e = heap_pop(heap)
    if not due then due = {} end
    n = n + 1
    due[n] = e
  end
  for i = 1, n do
    if self.failed then break end
    local e = due[i]
    local t, inst, key = e[1], e[3], e[4]
    local slot = key
    if slot == nil then slot = NILKEY end
    local set = inst.tset[slot]
    if set and set[t] then
      set[t] = nil
      if next(set) == nil then inst.tset[slot] = nil end
      local ctx = inst.ctx
      ctx.key = key
      ctx.time = t
      ctx.state = nil
      local ok, err = pcall(inst.timer, ctx, t)
      if not ok then on_error(self, inst, err, nil, key, t) end
    end
  end
  flush_all(self)
  return next_timer(self)
end

function W:next_timer()
  return next_timer(self)
end

function W:flush()
  flush_all(self)
end

function W:stats(gid)
  return get_inst(self, gid, "stats").stats
end

-- The live state table of `key` (nil key: the nil-key state), or nil.
function W:state(gid, key)
  local inst = get_inst(self, gid, "state")
  if key == nil then return inst.nil_state end
  return inst.states[key]
end

-- The gids hosted here, upstream first.
function W:gids()
  local r = {}
  for i, inst in ipairs(self.order) do r[i] = inst.gid end
  return r
end

-------------------------------------------------------------------------------
-- The cold parts: runtime_json, runtime_snapshot and runtime_reload add their
-- methods to W, and get what they use of this file.
-------------------------------------------------------------------------------

local internals = {
  get_inst = get_inst, next_timer = next_timer, flush_all = flush_all,
  on_error = on_error, add_timer = add_timer, check_timer = check_timer,
  op_of_chunk = op_of_chunk, make_run_records = make_run_records,
  errstr = errstr, NILKEY = NILKEY,
}
local json = require("sluice.runtime_json")
json.install(W, internals)
M.to_json = json.to_json
require("sluice.runtime_snapshot").install(W, internals)
local reload = require("sluice.runtime_reload")
reload.install(W, internals)
release_held = reload.release_held

M.Worker = W
M.NILKEY = NILKEY
return M
