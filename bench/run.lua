-- bench/run.lua: sluice against LuaJIT alone on the shared workloads.
--
-- usage: luajit bench/run.lua [path/to/sluice]          (make bench)
--
-- For W1 (stateless map) and W2 (keyed word count), both from
-- ../shared/bench (REPO/../shared/bench; env SLUICE_SHARED overrides):
--   1. generates the input and its expected output into bench/data/ unless
--      they are already there with the same parameters;
--   2. runs, RUNS times and alternating, the LuaJIT-alone baseline
--      (`luajit baseline_*.lua IN OUT`) and `sluice run bench/wN.conf`,
--      timing each whole command with CLOCK_MONOTONIC;
--   3. checks every output against the expected one (W1 byte for byte, or
--      sorted when the conf runs an operator with parallelism > 1; W2
--      sorted) and fails loudly when one is wrong;
--   4. prints median records/s for both (W2: input lines/s), the ratio
--      sluice/baseline and whether it reaches the target.
--
-- env: BENCH_LINES (input lines, default 2000000), BENCH_RUNS (default 3),
--      SLUICE_SHARED (the shared folder, or its bench/ folder).
-- exit: 0 when every output was right (whether or not a target was met),
--       1 when an output was wrong or a command failed, 2 on bad setup.

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

local CLOCK_MONOTONIC = 1
local ts = ffi.new("struct sl_timespec")
local function now()
  assert(ffi.C.clock_gettime(CLOCK_MONOTONIC, ts) == 0, "clock_gettime failed")
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local function realpath(p)
  local r = ffi.C.realpath(p, nil)
  if r == nil then return nil end
  local s = ffi.string(r)
  ffi.C.free(r)
  return s
end

local function die(code, ...)
  io.stderr:write("bench: ", string.format(...), "\n")
  os.exit(code)
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function slurp(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function spit(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute: LuaJIT without 5.2 compat returns the wait status (a number);
-- with it, true|nil, "exit"|"signal", code.
local function run(cmd)
  local a, b, c = os.execute(cmd)
  if type(a) == "number" then
    if a == 0 then return true, 0 end
    if a >= 256 then return false, math.floor(a / 256) end
    return false, "signal " .. a
  end
  if a == true then return true, 0 end
  return false, (b == "signal" and "signal " or "") .. tostring(c)
end

local function tail(p, n)
  local s = slurp(p) or ""
  local lines = {}
  for l in s:gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "", from)
end

-- ---- where things are -------------------------------------------------------

local script = realpath(arg[0]) or die(2, "cannot resolve %s", arg[0])
local BENCH = script:match("^(.*)/[^/]+$")           -- REPO/bench
local REPO = BENCH:match("^(.*)/[^/]+$")             -- REPO
local DATA = BENCH .. "/data"

local SHARED
do
  local env = os.getenv("SLUICE_SHARED")
  local cands = env and { env .. "/bench", env } or { REPO .. "/../shared/bench" }
  for _, c in ipairs(cands) do
    if exists(c .. "/gen_w1.lua") then SHARED = realpath(c) break end
  end
  if not SHARED then
    die(2, "shared workloads not found (looked in %s); set SLUICE_SHARED",
        table.concat(cands, ", "))
  end
end

local SLUICE = arg[1] or "build/sluice"
SLUICE = realpath(SLUICE) or realpath(REPO .. "/" .. SLUICE)
  or die(2, "sluice binary not found: %s (build it: make build)", arg[1] or "build/sluice")

local LINES = tonumber(os.getenv("BENCH_LINES") or "2000000")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "3")
if not LINES or LINES < 1 or LINES % 1 ~= 0 then die(2, "bad BENCH_LINES") end
if not RUNS or RUNS < 1 or RUNS % 1 ~= 0 then die(2, "bad BENCH_RUNS") end

assert(run("mkdir -p " .. sh_quote(DATA)))

-- One bench at a time per tree: runs share bench/data/ (inputs and outputs)
-- and would skew each other's timings. The lock goes with the process.
do
  local O_RDWR, O_CREAT, LOCK_EX, LOCK_NB = 2, 64, 2, 4
  local fd = ffi.C.open(DATA .. "/.lock", bit.bor(O_RDWR, O_CREAT), 420)
  if fd < 0 then die(2, "cannot open %s/.lock", DATA) end
  if ffi.C.flock(fd, bit.bor(LOCK_EX, LOCK_NB)) ~= 0 then
    io.stderr:write("bench: another bench run holds ", DATA, "/.lock; waiting for it\n")
    if ffi.C.flock(fd, LOCK_EX) ~= 0 then die(2, "flock failed") end
  end
end

-- ---- inputs -------------------------------------------------------------------

-- Regenerates IN/EXPECTED when the stamp (generator parameters and the
-- generator's own text) differs from the last generation's.
local function ensure_input(name, gen, args_after, files)
  local gen_path = SHARED .. "/" .. gen
  local gen_text = slurp(gen_path) or die(2, "cannot read %s", gen_path)
  local stamp = string.format("%s %s size=%d sum=%d\n", gen, table.concat(args_after, " "),
                              #gen_text, (function()
                                local h = 0
                                for i = 1, #gen_text do h = (h * 31 + gen_text:byte(i)) % 2147483647 end
                                return h
                              end)())
  local stamp_path = DATA .. "/" .. name .. ".params"
  local have = slurp(stamp_path) == stamp
  for _, f in ipairs(files) do have = have and exists(f) end
  if have then
    io.stderr:write(string.format("bench: %s input present (%s)\n", name, stamp:gsub("\n", "")))
    return
  end
  os.remove(stamp_path)
  local cmd = { "luajit", sh_quote(gen_path) }
  for _, a in ipairs(args_after) do cmd[#cmd + 1] = sh_quote(a) end
  io.stderr:write("bench: generating ", name, ": ", table.concat(cmd, " "), "\n")
  local ok, code = run(table.concat(cmd, " "))
  if not ok then die(1, "generator failed (%s): %s", tostring(code), gen) end
  spit(stamp_path, stamp)
end

local W1_IN, W1_EXP = DATA .. "/w1.txt", DATA .. "/w1.expected.txt"
local W2_IN, W2_EXP = DATA .. "/w2.txt", DATA .. "/w2.expected.txt"
ensure_input("w1", "gen_w1.lua", { W1_IN, tostring(LINES), "42", W1_EXP }, { W1_IN, W1_EXP })
ensure_input("w2", "gen_w2.lua", { W2_IN, W2_EXP, tostring(LINES), "7", "10000", "1.0" },
             { W2_IN, W2_EXP })

-- ---- checking outputs -----------------------------------------------------------

local function sorted_lines(s)
  local t, n = {}, 0
  for l in s:gmatch("([^\n]*)\n") do n = n + 1; t[n] = l end
  -- a last line without its newline still counts (and is flagged below)
  local last = s:match("([^\n]+)$")
  if last then n = n + 1; t[n] = last end
  table.sort(t)
  return t
end

-- Returns nil when right, else a message saying what differs.
local function check(out_path, exp_path, sorted)
  local got = slurp(out_path)
  if not got then return "no output file " .. out_path end
  local exp = assert(slurp(exp_path))
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
  local g, e = sorted_lines(got), sorted_lines(exp)
  for i = 1, math.max(#g, #e) do
    if g[i] ~= e[i] then
      return string.format("sorted output differs from sorted %s at line %d of %d (expected %d)\n" ..
                           "  got:      %q\n  expected: %q", exp_path, i, #g, #e,
                           tostring(g[i]), tostring(e[i]))
    end
  end
  return nil
end

-- The largest parallelism a conf declares (sorted comparison when > 1).
local function max_parallelism(conf)
  local s = assert(slurp(conf))
  local m = 1
  for p in s:gmatch("parallelism%s*=%s*(%d+)") do m = math.max(m, tonumber(p)) end
  return m
end

-- ---- the runs -------------------------------------------------------------------

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  if n % 2 == 1 then return c[(n + 1) / 2] end
  return (c[n / 2] + c[n / 2 + 1]) / 2
end

local workloads = {
  { name = "W1", what = "records/s", target = 0.9,
    baseline = SHARED .. "/baseline_w1_map.lua", input = W1_IN, expected = W1_EXP,
    conf = BENCH .. "/w1.conf", sluice_out = DATA .. "/out_w1.txt",
    base_out = DATA .. "/baseline_out_w1.txt" },
  { name = "W2", what = "lines/s", target = 1.2,
    baseline = SHARED .. "/baseline_w2_count.lua", input = W2_IN, expected = W2_EXP,
    conf = BENCH .. "/w2.conf", sluice_out = DATA .. "/out_w2.txt",
    base_out = DATA .. "/baseline_out_w2.txt", always_sorted = true },
}

local failures = 0
local function timed(label, cmd, out_path, exp_path, sorted, log)
  os.remove(out_path)
  local t0 = now()
  local ok, code = run(cmd .. " 2>" .. sh_quote(log))
  local dt = now() - t0
  if not ok then
    failures = failures + 1
    io.stderr:write(string.format("bench: FAILED %s: exit %s\n  command: %s\n  last stderr lines (%s):\n%s\n",
                                  label, tostring(code), cmd, log, tail(log, 15)))
    return nil
  end
  local err = check(out_path, exp_path, sorted)
  if err then
    failures = failures + 1
    io.stderr:write(string.format("bench: WRONG OUTPUT %s: %s\n  command: %s\n", label, err, cmd))
    return nil
  end
  return dt
end

io.stderr:write(string.format("bench: %d lines, %d runs each, sluice = %s\n", LINES, RUNS, SLUICE))

local results = {}
for _, w in ipairs(workloads) do
  local sorted = w.always_sorted or max_parallelism(w.conf) > 1
  local base_cmd = "luajit " .. sh_quote(w.baseline) .. " " .. sh_quote(w.input) .. " " .. sh_quote(w.base_out)
  local sl_cmd = sh_quote(SLUICE) .. " run " .. sh_quote(w.conf) .. " >/dev/null"
  local bt, st = {}, {}
  for r = 1, RUNS do
    local b = timed(w.name .. " baseline run " .. r, base_cmd, w.base_out, w.expected,
                    w.always_sorted, DATA .. "/baseline_" .. w.name:lower() .. ".log")
    if b then bt[#bt + 1] = b end
    local s = timed(w.name .. " sluice run " .. r, sl_cmd, w.sluice_out, w.expected,
                    sorted, DATA .. "/sluice_" .. w.name:lower() .. ".log")
    if s then st[#st + 1] = s end
    io.stderr:write(string.format("bench: %s run %d/%d: baseline %s, sluice %s\n", w.name, r, RUNS,
                                  b and string.format("%.3f s", b) or "FAILED",
                                  s and string.format("%.3f s", s) or "FAILED"))
  end
  results[#results + 1] = { w = w, bt = bt, st = st, base_cmd = base_cmd, sl_cmd = sl_cmd }
end

-- ---- the table ------------------------------------------------------------------

local function fmt_rate(x)
  if not x then return "-" end
  if x >= 1e6 then return string.format("%.3f M", x / 1e6) end
  return string.format("%.1f k", x / 1e3)
end

print("")
print(string.format("sluice bench: %d input lines, median of %d runs, %s", LINES, RUNS,
                    os.date("!%Y-%m-%dT%H:%M:%SZ")))
print(string.format("%-8s %-10s %14s %14s %8s %8s  %s", "workload", "unit", "baseline",
                    "sluice", "ratio", "target", "result"))
for _, r in ipairs(results) do
  local w = r.w
  local b = #r.bt > 0 and LINES / median(r.bt) or nil
  local s = #r.st > 0 and LINES / median(r.st) or nil
  local ratio = (b and s) and s / b or nil
  local res
  if #r.bt < RUNS or #r.st < RUNS then res = "FAILED"
  elseif ratio >= w.target then res = "PASS"
  else res = "BELOW" end
  print(string.format("%-8s %-10s %14s %14s %8s %8s  %s", w.name, w.what, fmt_rate(b), fmt_rate(s),
                      ratio and string.format("%.2fx", ratio) or "-",
                      string.format(">=%.1f", w.target), res))
end
print("")
print("measured: each whole command timed with CLOCK_MONOTONIC, output checked after each run;")
for _, r in ipairs(results) do
  print(string.format("  %s baseline: %s", r.w.name, r.base_cmd))
  print(string.format("  %s sluice:   %s", r.w.name, r.sl_cmd))
  local bt, st = {}, {}
  for i, v in ipairs(r.bt) do bt[i] = string.format("%.3f", v) end
  for i, v in ipairs(r.st) do st[i] = string.format("%.3f", v) end
  print(string.format("  %s times (s): baseline %s; sluice %s", r.w.name,
                      table.concat(bt, " "), table.concat(st, " ")))
end

if failures > 0 then
  io.stderr:write(string.format("bench: %d run(s) FAILED or gave WRONG OUTPUT (see above)\n", failures))
  os.exit(1)
end
os.exit(0)
