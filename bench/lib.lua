-- bench/lib.lua: what bench/run.lua, bench/checkpoint.lua and bench/redis.lua
-- share. A program sets lib.prog (the prefix of its stderr lines) and then
-- may use:
--   clocks      lib.now() (CLOCK_MONOTONIC), lib.wall() (CLOCK_REALTIME), s
--   files       lib.realpath, lib.exists, lib.slurp, lib.spit, lib.file_size
--   commands    lib.sh_quote, lib.run(cmd) -> ok, exit code | "signal N",
--               lib.tail(text, n) (its last n lines)
--   reporting   lib.die(code, fmt, ...), lib.fail(fmt, ...) (counts in
--               lib.failures), lib.finish(fmt) (exit 1 when a step failed),
--               lib.median, lib.fmt_rate
--   setup       lib.locate(arg0) -> BENCH, REPO, DATA; lib.find_shared;
--               lib.find_sluice; lib.env_count, lib.env_sizes; lib.proc(REPO)
--               (spec/support/proc.lua); lib.lock(DATA) (one bench at a time
--               per tree)
--   inputs      lib.ensure_input (generate once per parameters),
--               lib.ensure_w1 / lib.ensure_w2 (the shared W1/W2 inputs),
--               lib.w2_conf (bench/w2.conf with absolute paths)
--   checking    lib.sorted_lines, lib.check(out, expected, sorted)
--   1M keys     lib.write_key_ops(dir, keys) (key.lua, hold.lua),
--               lib.keys_conf (their pipeline), lib.all_keys_in

local ffi = require("ffi")
local bit = require("bit")

ffi.cdef [[
typedef long time_t;
struct sl_timespec { time_t tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct sl_timespec *tp);
char *realpath(const char *path, char *resolved_path);
void free(void *ptr);
int open(const char *pathname, int flags, int mode);
int flock(int fd, int operation);
]]

local M = { prog = "bench", failures = 0 }

-- ---- clocks -----------------------------------------------------------------

local CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
local ts = ffi.new("struct sl_timespec")
local function clock(id)
  assert(ffi.C.clock_gettime(id, ts) == 0, "clock_gettime failed")
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
function M.now() return clock(CLOCK_MONOTONIC) end
function M.wall() return clock(CLOCK_REALTIME) end   -- to compare with log lines

-- ---- files --------------------------------------------------------------------

function M.realpath(p)
  local r = ffi.C.realpath(p, nil)
  if r == nil then return nil end
  local s = ffi.string(r)
  ffi.C.free(r)
  return s
end

function M.exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

function M.slurp(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.spit(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

function M.file_size(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- ---- commands -------------------------------------------------------------------

function M.sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute: LuaJIT without 5.2 compat returns the wait status (a number);
-- with it, true|nil, "exit"|"signal", code.
function M.run(cmd)
  local a, b, c = os.execute(cmd)
  if type(a) == "number" then
    if a == 0 then return true, 0 end
    if a >= 256 then return false, math.floor(a / 256) end
    return false, "signal " .. a
  end
  if a == true then return true, 0 end
  return false, (b == "signal" and "signal " or "") .. tostring(c)
end

-- The last n lines of a text (nil counts as empty), newlines kept.
function M.tail(s, n)
  local lines = {}
  for l in (s or ""):gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
  return table.concat(lines, "", math.max(1, #lines - n + 1))
end

-- ---- reporting ----------------------------------------------------------------------

function M.die(code, ...)
  io.stderr:write(M.prog, ": ", string.format(...), "\n")
  os.exit(code)
end

function M.fail(...)
  M.failures = M.failures + 1
  io.stderr:write(M.prog, ": ", string.format(...), "\n")
end

-- Exits 1 with fmt (given the failure count) when something failed, else 0.
function M.finish(fmt)
  if M.failures > 0 then
    io.stderr:write(M.prog, ": ", string.format(fmt, M.failures), "\n")
    os.exit(1)
  end
  os.exit(0)
end

-- nil for an empty list.
function M.median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  if n == 0 then return nil end
  if n % 2 == 1 then return c[(n + 1) / 2] end
  return (c[n / 2] + c[n / 2 + 1]) / 2
end

function M.fmt_rate(x)
  if not x then return "-" end
  if x >= 1e6 then return string.format("%.3f M", x / 1e6) end
  return string.format("%.1f k", x / 1e3)
end

-- ---- setup ----------------------------------------------------------------------------

-- From the program's arg[0]: REPO/bench, REPO and REPO/bench/data.
function M.locate(arg0)
  local script = M.realpath(arg0) or M.die(2, "cannot resolve %s", arg0)
  local BENCH = script:match("^(.*)/[^/]+$")           -- REPO/bench
  local REPO = BENCH:match("^(.*)/[^/]+$")             -- REPO
  return BENCH, REPO, BENCH .. "/data"
end

-- The shared workloads' folder: SLUICE_SHARED (or its bench/), else
-- REPO/../shared/bench; the one holding `marker`. hint ends the error.
function M.find_shared(REPO, marker, hint)
  local env = os.getenv("SLUICE_SHARED")
  local cands = env and { env .. "/bench", env } or { REPO .. "/../shared/bench" }
  for _, c in ipairs(cands) do
    if M.exists(c .. "/" .. marker) then return M.realpath(c) end
  end
  M.die(2, "shared workloads not found (looked in %s)%s", table.concat(cands, ", "), hint or "")
end

-- The sluice binary: arg (default build/sluice), as is or from REPO.
function M.find_sluice(REPO, arg1)
  local path = arg1 or "build/sluice"
  return M.realpath(path) or M.realpath(REPO .. "/" .. path)
    or M.die(2, "sluice binary not found: %s (build it: make build)", path)
end

-- A positive integer from the environment (default when unset).
function M.env_count(name, default)
  local n = tonumber(os.getenv(name) or default)
  if not n or n < 1 or n % 1 ~= 0 then M.die(2, "bad %s", name) end
  return n
end

-- BENCH_LINES (default 2000000), BENCH_RUNS (3) and BENCH_KEYS (1000000).
function M.env_sizes()
  return M.env_count("BENCH_LINES", "2000000"), M.env_count("BENCH_RUNS", "3"),
         M.env_count("BENCH_KEYS", "1000000")
end

-- spec/support/proc.lua (spawn / kill by PID), with REPO/spec on package.path.
function M.proc(REPO)
  package.path = REPO .. "/spec/?.lua;" .. package.path
  local ok, proc = pcall(require, "support.proc")
  if not ok then M.die(2, "needs luaposix and luasocket (spec/support/proc.lua): %s", proc) end
  return proc
end

-- One bench at a time per tree: runs share bench/data/ (inputs and outputs)
-- and would skew each other's timings. Creates DATA; the lock goes with the
-- process (the fd is never closed).
function M.lock(DATA)
  assert(M.run("mkdir -p " .. M.sh_quote(DATA)))
  local O_RDWR, O_CREAT, LOCK_EX, LOCK_NB = 2, 64, 2, 4
  local fd = ffi.C.open(DATA .. "/.lock", bit.bor(O_RDWR, O_CREAT), 420)
  if fd < 0 then M.die(2, "cannot open %s/.lock", DATA) end
  if ffi.C.flock(fd, bit.bor(LOCK_EX, LOCK_NB)) ~= 0 then
    io.stderr:write(M.prog, ": another bench run holds ", DATA, "/.lock; waiting for it\n")
    if ffi.C.flock(fd, LOCK_EX) ~= 0 then M.die(2, "flock failed") end
  end
end

-- ---- inputs ----------------------------------------------------------------------------

-- Runs SHARED/gen with args_after unless DATA/name.params holds the same
-- stamp (generator, its arguments, its text's size and hash) and every one
-- of files exists. announce: say so on stderr when the input is reused.
function M.ensure_input(SHARED, DATA, name, gen, args_after, files, announce)
  local gen_path = SHARED .. "/" .. gen
  local gen_text = M.slurp(gen_path) or M.die(2, "cannot read %s", gen_path)
  local h = 0
  for i = 1, #gen_text do h = (h * 31 + gen_text:byte(i)) % 2147483647 end
  local stamp = string.format("%s %s size=%d sum=%d\n", gen, table.concat(args_after, " "), #gen_text, h)
  local stamp_path = DATA .. "/" .. name .. ".params"
  local have = M.slurp(stamp_path) == stamp
  for _, f in ipairs(files) do have = have and M.exists(f) end
  if have then
    if announce then
      io.stderr:write(string.format("%s: %s input present (%s)\n", M.prog, name, stamp:gsub("\n", "")))
    end
    return
  end
  os.remove(stamp_path)
  local cmd = { "luajit", M.sh_quote(gen_path) }
  for _, a in ipairs(args_after) do cmd[#cmd + 1] = M.sh_quote(a) end
  io.stderr:write(M.prog, ": generating ", name, ": ", table.concat(cmd, " "), "\n")
  local ok, code = M.run(table.concat(cmd, " "))
  if not ok then M.die(1, "generator failed (%s): %s", tostring(code), gen) end
  M.spit(stamp_path, stamp)
end

-- W1 (stateless map) and W2 (keyed word count) of LINES lines, with their
-- expected outputs, in DATA; each returns input, expected. The same
-- parameters in every program, so any of them reuses the others' inputs.
function M.ensure_w1(SHARED, DATA, LINES, announce)
  local IN, EXP = DATA .. "/w1.txt", DATA .. "/w1.expected.txt"
  M.ensure_input(SHARED, DATA, "w1", "gen_w1.lua", { IN, tostring(LINES), "42", EXP }, { IN, EXP }, announce)
  return IN, EXP
end

function M.ensure_w2(SHARED, DATA, LINES, announce)
  local IN, EXP = DATA .. "/w2.txt", DATA .. "/w2.expected.txt"
  M.ensure_input(SHARED, DATA, "w2", "gen_w2.lua", { IN, EXP, tostring(LINES), "7", "10000", "1.0" },
                 { IN, EXP }, announce)
  return IN, EXP
end

-- bench/w2.conf with its paths made absolute, reading W2_IN and writing out;
-- pipeline_extra (conf text) goes at the top of the pipeline block.
function M.w2_conf(BENCH, W2_IN, out, pipeline_extra)
  local base = assert(M.slurp(BENCH .. "/w2.conf"))
  local s = base:gsub('"ops/', '"' .. BENCH .. '/ops/')
                :gsub('path = "data/w2%.txt"', 'path = "' .. W2_IN .. '"')
                :gsub('path = "data/out_w2%.txt"', 'path = "' .. out .. '"')
  if pipeline_extra then
    s = s:gsub('(pipeline "bench%-w2" {\n)', "%1" .. pipeline_extra:gsub("%%", "%%%%"))
  end
  assert(s:find(out, 1, true) and s:find(W2_IN, 1, true), "bench/w2.conf changed shape")
  return s
end

-- ---- checking outputs --------------------------------------------------------------------

function M.sorted_lines(s)
  local t, n = {}, 0
  for l in s:gmatch("([^\n]*)\n") do n = n + 1; t[n] = l end
  -- a last line without its newline still counts (and is flagged by check)
  local last = s:match("([^\n]+)$")
  if last then n = n + 1; t[n] = last end
  table.sort(t)
  return t
end

-- Returns nil when out_path holds exp_path's text (sorted: the same lines in
-- any order), else a message saying what differs. oneline: the message on
-- one line.
function M.check(out_path, exp_path, sorted, oneline)
  local got = M.slurp(out_path)
  if not got then return "no output file " .. out_path end
  local exp = assert(M.slurp(exp_path))
  if not sorted then
    if got == exp then return nil end
    local i, line = 1, 1
    local n = math.min(#got, #exp)
    while i <= n and got:byte(i) == exp:byte(i) do
      if got:byte(i) == 10 then line = line + 1 end
      i = i + 1
    end
    return string.format("differs from %s at byte %d (line %d); got %d bytes, expected %d\n" ..
                         "  got:      %q\n  expected: %q", exp_path, i, line, #got, #exp,
                         got:match("[^\n]*", (got:sub(1, i - 1):match(".*\n()") or 1)) or "",
                         exp:match("[^\n]*", (exp:sub(1, i - 1):match(".*\n()") or 1)) or "")
  end
  if #got > 0 and got:byte(#got) ~= 10 then return "last line has no newline" end
  local g, e = M.sorted_lines(got), M.sorted_lines(exp)
  for i = 1, math.max(#g, #e) do
    if g[i] ~= e[i] then
      return string.format("sorted output differs from sorted %s at line %d of %d (expected %d)" ..
                           (oneline and ": got %q, expected %q" or "\n  got:      %q\n  expected: %q"),
                           exp_path, i, #g, #e, tostring(g[i]), tostring(e[i]))
    end
  end
  return nil
end

-- ---- 1M keys ------------------------------------------------------------------------------

-- dir/key.lua (key = value % keys) and dir/hold.lua (ctx.state.n = 1).
function M.write_key_ops(dir, keys)
  M.spit(dir .. "/key.lua", string.format([[
local op = {}
local tostring, tonumber = tostring, tonumber
function op.process(ctx, v) ctx:emit(v, tostring(tonumber(v) %% %d)) end
return op
]], keys))
  M.spit(dir .. "/hold.lua", [[
local op = {}
function op.process(ctx, _) ctx.state.n = 1 end
return op
]])
end

-- The pipeline over them: an unbounded generator -> key x2 -key-> hold x2,
-- exactly_once, a checkpoint every `every` to store (keep = 2), into out.
function M.keys_conf(name, every, store, out)
  return string.format([[
pipeline "%s" {
  workers = 2,
  guarantee = "exactly_once",
  checkpoint = { every = "%s", store = "%s", keep = 2 },
}
source   "gen"  { kind = "generator" }
operator "key"  { script = "key.lua", from = "gen", parallelism = 2 }
operator "hold" { script = "hold.lua", from = "key", grouping = "key", parallelism = 2 }
sink     "out"  { kind = "file", path = "%s", from = "hold" }
]], name, every, store, out)
end

-- Whether completed checkpoints c ({ bytes = ... }, oldest first) show every
-- one of keys in the state: at least 3, the last two of the same size.
function M.all_keys_in(c, keys)
  local n = #c
  return n >= 3 and c[n].bytes == c[n - 1].bytes and c[n].bytes > keys
end

return M
