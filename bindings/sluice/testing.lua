-- sluice.testing: run one operator script without a server, in a Busted spec.
--
--   local testing = require("sluice.testing")
--   local h = testing.operator("scripts/count.lua", { params = {} })
--   h:push("hello", "hello", 1000)    -- value [, key [, time]]
--   h:emitted()                       -- { {value=, key=, time=}, ... } since last call
--   h:state("hello")                  -- that key's state table
--   h:advance(5000)                   -- move processing time on; timers fire
--   local snap = h:checkpoint()       -- testing.operator(...):restore(snap)
--   h:close()                         -- runs op.close, returns what it emitted
--   h:reload([path])                  -- hot reload: true | nil, "FILE:LINE: msg"
--
-- The harness builds a one-instance plan and runs it through the very same
-- sluice.runtime worker as the server: same sandbox, same string.buffer
-- codec (every pushed and every emitted record is encoded and decoded), same
-- error routing. Only the port (push / fail / log / clock) is written in Lua
-- here. The reference is docs/lua-api.md.

local rt = require("sluice.runtime")
local buffer = require("string.buffer")
local bit = require("bit")

local testing = {}

-------------------------------------------------------------------------------
-- The key hash: from the C core (sluice.core) when it is built, so that key
-- routing is the server's. FALLBACK: when `require("sluice.core")` fails
-- (the C module is not built, or not on package.cpath), a pure-Lua
-- MurmurHash3 x86 32-bit with seed 0 -- the same function as server/hash.c --
-- stands in. It only matters for key routing (testing.route); the operator
-- itself never sees the hash. testing.backend says which one is in use.
-------------------------------------------------------------------------------

local band, bor, bxor, lshift, rshift, rol, tobit =
  bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift, bit.rol, bit.tobit
local byte = string.byte

-- a * b mod 2^32 on int32 values, exactly (doubles hold 53 bits).
local function mul32(a, b)
  local al, ah = band(a, 0xffff), rshift(a, 16)
  return tobit(al * b + lshift(tobit(ah * b), 16))
end

local C1, C2 = tobit(0xcc9e2d51), tobit(0x1b873593)

-- MurmurHash3_x86_32(s, seed 0) as a number in [0, 2^32).
local function murmur3(s)
  local len = #s
  local h = 0
  local nb = len - len % 4
  for i = 1, nb, 4 do
    local a, b, c, d = byte(s, i, i + 3)
    local k = bor(a, lshift(b, 8), lshift(c, 16), lshift(d, 24))
    k = mul32(k, C1)
    k = rol(k, 15)
    k = mul32(k, C2)
    h = bxor(h, k)
    h = rol(h, 13)
    h = tobit(mul32(h, 5) + 0xe6546b64)
  end
  local rem = len - nb
  if rem > 0 then
    local k = 0
    if rem == 3 then k = bxor(k, lshift(byte(s, nb + 3), 16)) end
    if rem >= 2 then k = bxor(k, lshift(byte(s, nb + 2), 8)) end
    k = bxor(k, byte(s, nb + 1))
    k = mul32(k, C1)
    k = rol(k, 15)
    k = mul32(k, C2)
    h = bxor(h, k)
  end
  h = bxor(h, len)
  h = bxor(h, rshift(h, 16))
  h = mul32(h, tobit(0x85ebca6b))
  h = bxor(h, rshift(h, 13))
  h = mul32(h, tobit(0xc2b2ae35))
  h = bxor(h, rshift(h, 16))
  if h < 0 then h = h + 4294967296 end
  return h
end
testing.murmur3 = murmur3

local core_ok, core = pcall(require, "sluice.core")
local hash
if core_ok and type(core) == "table" and core.api ~= nil then
  hash = rt.ffi_port(core.api).hash
  testing.backend = "sluice.core " .. tostring(core.version)
else
  hash = murmur3
  testing.backend = "lua-fallback"
end
testing.hash = hash

-- Which instance (0-based) of an operator with `parallelism` instances a
-- record with `key` reaches through a key grouping.
function testing.route(key, parallelism, max_parallelism)
  max_parallelism = max_parallelism or 128
  local s = key
  if type(s) ~= "string" then
    if s == nil then s = "" else s = tostring(s) end
  end
  return math.floor((hash(s) % max_parallelism) * parallelism / max_parallelism)
end

-------------------------------------------------------------------------------
-- The harness
-------------------------------------------------------------------------------

local H = {}
H.__index = H

local OP_GID = 1
local CID_IN, CID_OUT, CID_DEAD = 0, 1, 2

local function basename(path)
  return (path:match("([^/]+)$") or path):gsub("%.lua$", "")
end

-- The plan a one-instance pipeline would get from sluice.conf:
-- input (harness source) -> operator -> emitted (sink), dead letters -> dead.
local function build_plan(script, o)
  local p = o.parallelism or 1
  local index = o.instance or 0
  assert(index >= 0 and index < p, "testing.operator: instance must be in 0..parallelism-1")
  local name = o.name or basename(script)
  return {
    file = script, dir = ".", name = "test", workers = 1,
    guarantee = "at_least_once", threads = 2,
    max_parallelism = o.max_parallelism or 128,
    n_nodes = 4, n_instances = 4, n_channels = 3,
    nodes = {
      [0] = { id = 0, name = "input", type = "source", kind = "harness", line = 0,
              parallelism = 1, first_gid = 0, inputs = {} },
      [1] = { id = 1, name = name, type = "operator", line = 0,
              parallelism = p, first_gid = OP_GID,
              inputs = { { node = 0, grouping = "shuffle" } },
              script = script, params = o.params or {},
              on_error = o.on_error or "dead_letter", dead_letter = 3,
              jit = o.jit ~= false, allow = o.allow or {} },
      [2] = { id = 2, name = "emitted", type = "sink", kind = "harness", line = 0,
              parallelism = 1, first_gid = 2,
              inputs = { { node = 1, grouping = "forward" } } },
      [3] = { id = 3, name = "dead_letters", type = "sink", kind = "harness", line = 0,
              parallelism = 1, first_gid = 3, inputs = {} },
    },
    instances = {
      [0] = { gid = 0, node = 0, index = 0, thread = 0, inputs = 0,
              in_channels = {}, chained_from = {},
              outs = { { node = 1, grouping = "shuffle", channels = { [0] = CID_IN } } } },
      [1] = { gid = OP_GID, node = 1, index = index, thread = 1, inputs = 1,
              in_channels = { CID_IN }, chained_from = {},
              outs = { { node = 2, grouping = "forward", channels = { [index] = CID_OUT } } },
              dead = CID_DEAD },
      [2] = { gid = 2, node = 2, index = 0, thread = 0, inputs = 1,
              in_channels = { CID_OUT }, chained_from = {}, outs = {} },
      [3] = { gid = 3, node = 3, index = 0, thread = 0, inputs = 1,
              in_channels = { CID_DEAD }, chained_from = {}, outs = {} },
    },
    channels = {
      [0] = { cid = CID_IN, from = 0, to = OP_GID, producer = 0, consumer = 1 },
      [1] = { cid = CID_OUT, from = OP_GID, to = 2, producer = 1, consumer = 0 },
      [2] = { cid = CID_DEAD, from = OP_GID, to = 3, producer = 1, consumer = 0 },
    },
  }
end

-- testing.operator(script_path, opts) -> harness
-- opts: params, on_error ("dead_letter" by default here), parallelism (1),
-- instance (0), allow, jit, name, max_parallelism, verbose (echo logs).
function testing.operator(script, opts)
  assert(type(script) == "string", "testing.operator: script path expected")
  local o = opts or {}
  local h = setmetatable({
    clock = 0, out = {}, dead = {}, log_lines = {}, failure = nil,
    opened = false, verbose = o.verbose or os.getenv("SLUICE_TEST_LOG") ~= nil,
    batches = 0, inbuf = buffer.new(),
  }, H)
  local port = {
    hash = hash,
    now = function() return h.clock end,
    log = function(level, component, msg)
      local line = { level = level, component = component, msg = msg }
      h.log_lines[#h.log_lines + 1] = line
      if h.verbose then
        io.stderr:write(("[%s] %s: %s\n"):format(
          ({ [0] = "debug", "info", "warn", "error" })[level] or tostring(level), component, msg))
      end
    end,
    fail = function(code, msg)
      if not h.failure then h.failure = { code = code, msg = msg } end
    end,
    push = function(cid, buf, nrec)
      h.batches = h.batches + 1
      local t = buffer.decode(buf:tostring())
      local list = cid == CID_DEAD and h.dead or h.out
      for i = 1, nrec do
        local j = 3 * i
        list[#list + 1] = { value = t[j - 2], key = t[j - 1], time = t[j] }
      end
    end,
  }
  h.port = port
  h.plan = build_plan(script, o)
  h.w = rt.new_worker(h.plan, 1, port)
  return h
end

function H:open()
  if not self.opened then
    self.opened = true
    local ok, err = self.w:open()
    if not ok then error(err, 2) end
  end
  return self
end

-- h:push(value [, key [, time]]): one record through the codec into process.
function H:push(value, key, time)
  self:open()
  if time == nil then time = self.clock end
  assert(type(time) == "number", "h:push: time must be a number (ms)")
  local b = self.inbuf
  b:reset()
  b:encode({ value, key, time })
  local p, len = b:ref()
  self.w:on_batch(OP_GID, p, len, 1)
  return self
end

-- h:push_batch({ {value, key, time}, ... }): one encoded batch of records.
function H:push_batch(records)
  self:open()
  local flat, n = {}, #records
  for i = 1, n do
    local r = records[i]
    flat[3 * i - 2], flat[3 * i - 1], flat[3 * i] = r[1], r[2], r[3] or self.clock
  end
  local b = self.inbuf
  b:reset()
  b:encode(flat)
  local p, len = b:ref()
  self.w:on_batch(OP_GID, p, len, n)
  return self
end

local function take(self, field)
  self:open()
  local list = self[field]
  self[field] = {}
  return list
end

-- Records emitted since the last call: { {value=, key=, time=}, ... }.
function H:emitted() return take(self, "out") end

-- Dead letters since the last call: { {value = {operator=, error=, value=,
-- key=, time=}, key=, time=}, ... }.
function H:dead_letters() return take(self, "dead") end

function H:state(key)
  self:open()
  return self.w:state(OP_GID, key)
end

function H:now() return self.clock end

-- Moves the processing-time clock on by `ms` and fires the timers that are
-- due, in time order (timers they set that are already due fire too).
function H:advance(ms)
  assert(type(ms) == "number" and ms >= 0, "h:advance: ms must be a number >= 0")
  self:open()
  self.clock = self.clock + ms
  local now, rounds = self.clock, 0
  local nt = self.w:on_timer(now)
  while nt ~= -1 and nt <= now do
    rounds = rounds + 1
    if rounds > 10000 then
      error("h:advance: timers keep setting due timers (10000 rounds)", 2)
    end
    nt = self.w:on_timer(now)
  end
  return self
end

function H:checkpoint()
  self:open()
  return self.w:snapshot(OP_GID)
end

-- Loads a snapshot (from h:checkpoint) into this harness. Before the first
-- push, so that op.open sees the restored state, as after a server restart.
function H:restore(snap)
  self.w:restore(OP_GID, snap)
  return self
end

-- Runs op.close (the input ended) and returns what was emitted since the
-- last emitted() call, close's records included.
function H:close()
  self:open()
  self.w:on_end(OP_GID, true)
  return self:emitted()
end

-- Hot-reloads the operator's script as the server does when the file
-- changes (docs/reload.md): the new code (the file at `path`, default the
-- script the harness was made with) is compiled in a fresh sandbox and its
-- open runs; only if both succeed is it swapped in. Keyed state and timers
-- are kept, and op.migrate(old_state, key) runs for every key. On failure
-- the old version keeps running and the error says FILE:LINE.
-- Returns true, or nil and the error.
function H:reload(path)
  self:open()
  local script = self.plan.nodes[1].script
  path = path or script
  local f, ferr = io.open(path, "rb")
  if not f then return nil, path .. ": cannot read: " .. tostring(ferr) end
  local src = f:read("*a")
  f:close()
  local ok, err = self.w:prepare_reload(script, src, "@" .. path)
  if not ok then
    self.w:abort_reload(script)
    return nil, err
  end
  self.w:commit_reload(script, false)
  return true
end

-- The version of the script the operator runs: 1, then +1 per reload.
function H:version() return self.w:version(OP_GID) end

function H:errors() self:open(); return self.w:stats(OP_GID).errors end
function H:stats() self:open(); return self.w:stats(OP_GID) end
function H:logs() return self.log_lines end

-- After an error under on_error = "stop": the message, and the exit code.
function H:failed()
  if self.failure then return self.failure.msg, self.failure.code end
  return nil
end

testing.Harness = H
return testing
