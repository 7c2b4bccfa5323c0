-- bench/runtime_micro.lua: the Lua runtime alone on W2 (split -> key -> count).
--
-- usage: LUA_PATH="bindings/?.lua;;" LUA_CPATH="build/lua/?.so;;" \
--          luajit bench/runtime_micro.lua [LINES=200000] [P=2] [ROUNDS=5]
--
-- The key hash is the C one from sluice.core when it is on LUA_CPATH (as in
-- the server), else from SLUICE_HASH_SO (any .so exporting sl_hash_bytes),
-- else the pure-Lua fallback of sluice.testing (slower: not representative).
--
-- No C core: a fake port carries the batches. 200k lines of 8 Zipf words
-- (vocabulary 10000, the same generator as /work/shared/bench/gen_w2.lua)
-- are encoded in batches of 1024 lines as a source would; split (1 instance)
-- emits every word keyed by itself; the key exchange encodes batches to P
-- count instances (all on the same thread here), whose push the fake port
-- queues and feeds back through on_batch; count keeps ctx.state.n and emits
-- "word count" in close. The baseline is /work/shared/bench/baseline_w2_count.lua's
-- per-record code on the same in-memory lines, in the same run.
-- Prints lines/s for both (median of ROUNDS) and the ratio.
local rt = require("sluice.runtime")
local buffer = require("string.buffer")
local ffi = require("ffi")

local LINES = tonumber(arg[1] or "200000")
local P = tonumber(arg[2] or "2")
local ROUNDS = tonumber(arg[3] or "5")
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local ops = here .. "/../spec/fixtures/ops/"

-- input: gen_w2's generator (Park-Miller LCG, Zipf s = 1.0, vocab 10000)
local function gen(n, seed, vocab)
  local M, A = 2147483647, 48271
  local x = (seed % (M - 1)) + 1
  local function rnd(k) x = (x * A) % M; return x % k end
  local function rnd01() x = (x * A) % M; return x / M end
  local syl = { "ba", "ke", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe",
                "ri", "so", "tu", "va", "we", "xi", "yo", "zu", "ca", "te", "mi", "ro" }
  local words = {}
  for i = 1, vocab do
    local k, parts = i, {}
    while k > 0 do
      local d = (k - 1) % #syl
      parts[#parts + 1] = syl[d + 1]
      k = (k - 1 - d) / #syl
    end
    words[i] = table.concat(parts)
  end
  for i = vocab, 2, -1 do
    local j = rnd(i) + 1
    words[i], words[j] = words[j], words[i]
  end
  local cdf, acc = {}, 0
  for r = 1, vocab do acc = acc + 1 / r; cdf[r] = acc end
  for r = 1, vocab do cdf[r] = cdf[r] / acc end
  local lines = {}
  for i = 1, n do
    local ws = {}
    for j = 1, 8 do
      local u = rnd01()
      local lo, hi = 1, vocab
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if cdf[mid] < u then lo = mid + 1 else hi = mid end
      end
      ws[j] = words[lo]
    end
    lines[i] = table.concat(ws, " ")
  end
  return lines
end

local lines = gen(LINES, 7, 10000)

-- input batches, encoded once (the C source's job)
local inputs = {}
do
  local b = buffer.new()
  for i = 1, LINES, 1024 do
    local flat, n = {}, 0
    for j = i, math.min(i + 1023, LINES) do
      flat[3 * n + 1], flat[3 * n + 2], flat[3 * n + 3] = lines[j], nil, 1000 + j
      n = n + 1
    end
    b:reset(); b:encode(flat)
    inputs[#inputs + 1] = { s = b:tostring(), n = n }
  end
end

-- plan: source(0) -> split(1) -key-> count(2..2+P-1) -> sink
local function make_plan()
  local nodes = {
    [0] = { id = 0, name = "lines", type = "source", kind = "generator", parallelism = 1, first_gid = 0 },
    [1] = { id = 1, name = "split", type = "operator", script = ops .. "split.lua", parallelism = 1,
            first_gid = 1, on_error = "skip", params = {} },
    [2] = { id = 2, name = "count", type = "operator", script = ops .. "count.lua", parallelism = P,
            first_gid = 2, on_error = "skip", params = {} },
    [3] = { id = 3, name = "out", type = "sink", kind = "file", parallelism = 1, first_gid = 2 + P },
  }
  local instances, channels = {}, {}
  local cid = 0
  local function chan(from, to, pt, ct)
    channels[cid] = { cid = cid, from = from, to = to, producer = pt, consumer = ct }
    cid = cid + 1
    return cid - 1
  end
  local sink_gid = 2 + P
  local c_in = chan(0, 1, 0, 1)
  instances[0] = { gid = 0, node = 0, index = 0, thread = 0,
                   outs = { { node = 1, grouping = "shuffle", channels = { [0] = c_in } } } }
  local split_out = {}
  for i = 0, P - 1 do split_out[i] = chan(1, 2 + i, 1, 1) end
  instances[1] = { gid = 1, node = 1, index = 0, thread = 1, in_channels = { c_in },
                   outs = { { node = 2, grouping = "key", channels = split_out } } }
  for i = 0, P - 1 do
    local c = chan(2 + i, sink_gid, 1, 0)
    instances[2 + i] = { gid = 2 + i, node = 2, index = i, thread = 1, in_channels = { split_out[i] },
                         outs = { { node = 3, grouping = "shuffle", channels = { [0] = c } } } }
  end
  instances[sink_gid] = { gid = sink_gid, node = 3, index = 0, thread = 0, outs = {} }
  return { name = "w2", workers = 1, threads = 2, n_nodes = 4, n_instances = sink_gid + 1,
           n_channels = cid, nodes = nodes, instances = instances, channels = channels,
           max_parallelism = 128 }, split_out
end

local function hasher()
  local ok, core = pcall(require, "sluice.core")
  if ok and type(core) == "table" and core.api then return rt.ffi_port(core.api).hash, "sluice.core (FFI)" end
  local so = os.getenv("SLUICE_HASH_SO")   -- any .so exporting sl_hash_bytes
  if so then
    local lib = ffi.load(so)
    rt.cdef()
    ffi.cdef("uint32_t sl_hash_bytes(const char *s, size_t n);")
    local api = ffi.new("sl_lua_api_t[1]")
    api[0].hash = lib.sl_hash_bytes
    local port = rt.ffi_port(api)
    KEEP = { api, lib, port }   -- the library must outlive the function pointer
    return port.hash, "sl_hash_bytes from " .. so .. " (FFI)"
  end
  return require("sluice.testing").murmur3, "pure-Lua murmur3 fallback"
end
local hash, hash_name = hasher()

local function run_sluice()
  local plan, split_out = make_plan()
  local queue, qn = {}, 0          -- batches for the count instances
  local to_gid = {}
  for i = 0, P - 1 do to_gid[split_out[i]] = 2 + i end
  local out_records = 0
  local results = {}
  local port = {
    hash = hash,
    now = function() return 0 end,
    log = function(l, c, m) io.stderr:write(c, ": ", m, "\n") end,
    fail = function(code, m) error(m) end,
    push = function(cid, buf, nrec)
      local g = to_gid[cid]
      if g then
        qn = qn + 1
        queue[qn] = { g, buf:tostring(), nrec }   -- a copy, as C's push does
      else
        out_records = out_records + nrec
        local t = buffer.decode(buf:tostring())
        for i = 1, 3 * nrec, 3 do results[#results + 1] = t[i] end
      end
    end,
  }
  local w = rt.new_worker(plan, 1, port)
  assert(w:open())
  local cast = ffi.cast
  local clock = os.clock
  local t0 = clock()
  local t_split = 0
  for bi = 1, #inputs do
    local b = inputs[bi]
    local ts = clock()
    w:on_batch(1, cast("const uint8_t *", b.s), #b.s, b.n)
    t_split = t_split + (clock() - ts)
    for qi = 1, qn do
      local q = queue[qi]
      w:on_batch(q[1], cast("const uint8_t *", q[2]), #q[2], q[3])
      queue[qi] = nil
    end
    qn = 0
  end
  SPLIT_TIMES[#SPLIT_TIMES + 1] = t_split
  w:on_end(1, true)
  for i = 0, P - 1 do w:on_end(2 + i, true) end
  local dt = os.clock() - t0
  return dt, results, w
end

local function run_baseline()
  local gmatch = string.gmatch
  local counts = {}
  local function count(line)
    for w in gmatch(line, "%S+") do
      counts[w] = (counts[w] or 0) + 1
    end
  end
  local t0 = os.clock()
  for i = 1, LINES do count(lines[i]) end
  local res = {}
  for w, c in pairs(counts) do res[#res + 1] = w .. " " .. c end
  return os.clock() - t0, res
end

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

SPLIT_TIMES = {}
local ts, tb = {}, {}
local res_s, res_b
for r = 1, ROUNDS do
  local dt, res = run_sluice()
  ts[r] = dt; res_s = res
  local dtb, resb = run_baseline()
  tb[r] = dtb; res_b = resb
end
table.sort(res_s); table.sort(res_b)
assert(#res_s == #res_b, ("distinct words differ: %d vs %d"):format(#res_s, #res_b))
for i = 1, #res_s do assert(res_s[i] == res_b[i], "mismatch: " .. res_s[i] .. " vs " .. res_b[i]) end

local ms, mb = median(ts), median(tb)
print(("runtime_micro: %d lines x 8 words, count parallelism %d, hash: %s, %d rounds (median)")
  :format(LINES, P, hash_name, ROUNDS))
print(("  sluice runtime (split -> key exchange -> count): %.3f s  %.0f lines/s  %.0f words/s")
  :format(ms, LINES / ms, 8 * LINES / ms))
local msplit = median(SPLIT_TIMES)
print(("    of which split on_batch (decode, gmatch, emit, route, encode, push): %.3f s,"
  .. " count on_batch (decode, ctx.state): %.3f s"):format(msplit, ms - msplit))
print(("  LuaJIT alone (baseline_w2_count per-record code): %.3f s  %.0f lines/s"):format(mb, LINES / mb))
print(("  ratio sluice/baseline: %.2fx  (output identical: %d distinct words)"):format(mb / ms, #res_s))
