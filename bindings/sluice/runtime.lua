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

local ffi = require("ffi")
local buffer = require("string.buffer")
local tnew = require("table.new")
local tclear = require("table.clear")
local jit = require("jit")

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

-------------------------------------------------------------------------------
-- The port over the C API (server/luaapi.h)
-------------------------------------------------------------------------------

-- KEEP IN SYNC with server/luaapi.h.
local CDEF = [[
typedef struct sl_lua_api_s {
  void *ctx;
  void (*push)(void *ctx, int32_t cid, const uint8_t *data, size_t len,
               uint32_t nrec);
  uint32_t (*hash)(const char *s, size_t n);
  void (*log)(int level, const char *component, const char *msg);
  void (*fail)(void *ctx, int code, const char *msg);
  double (*now_ms)(void);
} sl_lua_api_t;
]]

local function cdef_once()
  if not pcall(ffi.typeof, "sl_lua_api_t") then
    ffi.cdef(CDEF)
  end
end
M.cdef = cdef_once

local function missing(name)
  return function()
    error("sluice port: " .. name .. " is not available here (NULL in sl_lua_api_t)", 2)
  end
end

-- rt.ffi_port(api) -> port. `api` is a lightuserdata (or cdata) pointing to
-- an sl_lua_api_t. Fields that are NULL become functions that raise.
function M.ffi_port(api_ud)
  cdef_once()
  assert(api_ud ~= nil, "ffi_port: api pointer is nil")
  local api = ffi.cast("sl_lua_api_t *", api_ud)
  local port = { api = api }
  local cctx = api.ctx
  if api.push ~= nil then
    local push = api.push
    port.push = function(cid, buf, nrec)
      local p, len = buf:ref()
      push(cctx, cid, p, len, nrec)
    end
  else
    port.push = missing("push")
  end
  if api.hash ~= nil then
    local hash = api.hash
    port.hash = function(s) return hash(s, #s) end
    port.hash_ffi = hash
  else
    port.hash = missing("hash")
  end
  if api.log ~= nil then
    local log = api.log
    port.log = function(level, component, msg)
      log(level, tostring(component), tostring(msg))
    end
  else
    port.log = function(level, component, msg)
      io.stderr:write(format("%s %s: %s\n", level, tostring(component), tostring(msg)))
    end
  end
  if api.fail ~= nil then
    local fail = api.fail
    port.fail = function(code, msg) fail(cctx, code, tostring(msg)) end
  else
    port.fail = missing("fail")
  end
  if api.now_ms ~= nil then
    local now_ms = api.now_ms
    port.now = function() return now_ms() end
  else
    port.now = missing("now_ms")
  end
  return port
end

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

-------------------------------------------------------------------------------
-- Sandbox
-------------------------------------------------------------------------------

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

local SAFE_BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
  "tonumber", "tostring", "type", "unpack", "rawget", "rawset", "rawequal",
  "setmetatable", "getmetatable",
}

local SAFE_REQUIRE = {
  ["string.buffer"] = true, ["table.new"] = true, ["table.clear"] = true,
  ["bit"] = true,
}

-- Builds a fresh global table for one operator instance.
-- `allow` is the node's set: io, os, ffi, require.
local function make_env(allow, print_fn)
  allow = allow or {}
  local env = {}
  for _, name in ipairs(SAFE_BASE) do env[name] = _G[name] end
  env._VERSION = _VERSION
  env.print = print_fn
  env.string = copy(string)
  local t = copy(table)
  t.new, t.clear = tnew, tclear
  t.unpack = t.unpack or unpack
  env.table = t
  env.math = copy(math)
  env.bit = copy(require("bit"))
  env.coroutine = copy(coroutine)
  if allow.os then
    env.os = copy(os)
  else
    env.os = { time = os.time, clock = os.clock, date = os.date }
  end
  if allow.io then env.io = io end
  if allow.require then
    env.require = require
  else
    local ffi_ok = allow.ffi
    env.require = function(name)
      if SAFE_REQUIRE[name] or (ffi_ok and name == "ffi") then
        return require(name)
      end
      error(format("require '%s' is not allowed in an operator script " ..
                   "(the conf can grant it with allow = { 'require' })",
                   tostring(name)), 2)
    end
  end
  if allow.ffi then env.ffi = ffi end
  env._G = env
  return env
end
M.make_env = make_env

-------------------------------------------------------------------------------
-- Timer heap (per worker): entries { t, seq, inst, key }, ordered by (t, seq)
-------------------------------------------------------------------------------

local function h_less(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end

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

local function heap_rebuild(h, keep)
  local all = {}
  for i = 1, #h do all[i] = h[i] end
  tclear(h)
  for i = 1, #all do
    if keep(all[i]) then heap_push(h, all[i]) end
  end
end

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

-- A fresh sandbox for one instance of `node` (print logs as the instance).
local function instance_env(w, node, component)
  local port = w.port
  return make_env(node.allow, function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    port.log(1, component, concat(parts, " "))
  end)
end

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


-- Emits and timers a reloaded version's open asked for (reload, below).
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

-- JSON text of a Lua value, for the admin server. Tables with only keys
-- 1..n are arrays, others objects (keys as strings); NaN and infinities
-- are null; functions, userdata and cycles become strings; depth <= 32.
local function json_str(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    local b = c:byte()
    if b < 32 or b == 127 then return format("\\u%04x", b) end
    return c -- UTF-8 bytes pass through
  end) .. '"'
end

local function to_json(v, depth, seen)
  local t = type(v)
  if t == "string" then return json_str(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == floor(v) and v > -2^53 and v < 2^53 then return format("%d", v) end
    return format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if v == nil then return "null" end
  if t ~= "table" or depth > 32 or seen[v] then return json_str(tostring(v)) end
  seen[v] = true
  local n, count = #v, 0
  for _ in next, v do count = count + 1 end
  local parts = {}
  if n > 0 and n == count then
    for i = 1, n do parts[i] = to_json(v[i], depth + 1, seen) end
    seen[v] = nil
    return "[" .. concat(parts, ",") .. "]"
  end
  for k, x in next, v do
    parts[#parts + 1] = json_str(tostring(k)) .. ":" .. to_json(x, depth + 1, seen)
  end
  table.sort(parts)
  seen[v] = nil
  return "{" .. concat(parts, ",") .. "}"
end
M.to_json = function(v) return to_json(v, 0, {}) end

-- The admin server's GET /state/OP/KEY: JSON of key's live state in
-- instance gid (key as a string, or else as the number it spells), or nil.
function W:state_json(gid, key)
  local inst = get_inst(self, gid, "state")
  local st = inst.states[key]
  if st == nil and tonumber(key) then st = inst.states[tonumber(key)] end
  if st == nil then return nil end
  return to_json(st, 0, {})
end

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

-- The gids hosted here, upstream first.
function W:gids()
  local r = {}
  for i, inst in ipairs(self.order) do r[i] = inst.gid end
  return r
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


-------------------------------------------------------------------------------
-- Hot reload of operator scripts (docs/reload.md)
--
--   w:prepare_reload(script [, src [, chunkname]]) -> true, n | nil, err
--   w:commit_reload(script [, at_barrier])         -> next_timer_ms | -1
--   w:abort_reload(script)
--   w:swap_ready(gid)                              -> next_timer_ms | -1
--
-- prepare: for every instance here whose node runs `script` (absolute path,
-- as in the plan), compile `src` (default: the file's content) in a fresh
-- sandbox and run its open with a staging ctx: the instance's ctx for
-- reading, but emits and timers are held and fields it sets are kept aside.
-- Nothing the running version uses is touched. commit: swap the prepared
-- version in now, or (at_barrier) mark it ready, to be swapped by
-- swap_ready(gid) when the core sees the next checkpoint barrier pass the
-- instance. abort: drop what prepare built.
-------------------------------------------------------------------------------

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
release_held = function(w, inst)
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

M.Worker = W
M.NILKEY = NILKEY
return M
