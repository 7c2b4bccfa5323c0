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

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require("lib")
lib.prog = "bench"
local now, run, sh_quote, slurp = lib.now, lib.run, lib.sh_quote, lib.slurp

-- ---- where things are -------------------------------------------------------

local BENCH, REPO, DATA = lib.locate(arg[0])
local SHARED = lib.find_shared(REPO, "gen_w1.lua", "; set SLUICE_SHARED")
local SLUICE = lib.find_sluice(REPO, arg[1])

local LINES = lib.env_count("BENCH_LINES", "2000000")
local RUNS = lib.env_count("BENCH_RUNS", "3")

lib.lock(DATA)

-- ---- inputs -------------------------------------------------------------------

local W1_IN, W1_EXP = lib.ensure_w1(SHARED, DATA, LINES, true)
local W2_IN, W2_EXP = lib.ensure_w2(SHARED, DATA, LINES, true)

-- ---- checking outputs -----------------------------------------------------------

-- The largest parallelism a conf declares (sorted comparison when > 1).
local function max_parallelism(conf)
  local s = assert(slurp(conf))
  local m = 1
  for p in s:gmatch("parallelism%s*=%s*(%d+)") do m = math.max(m, tonumber(p)) end
  return m
end

-- ---- the runs -------------------------------------------------------------------

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

local function timed(label, cmd, out_path, exp_path, sorted, log)
  os.remove(out_path)
  local t0 = now()
  local ok, code = run(cmd .. " 2>" .. sh_quote(log))
  local dt = now() - t0
  if not ok then
    lib.fail("FAILED %s: exit %s\n  command: %s\n  last stderr lines (%s):\n%s",
             label, tostring(code), cmd, log, lib.tail(slurp(log), 15))
    return nil
  end
  local err = lib.check(out_path, exp_path, sorted)
  if err then
    lib.fail("WRONG OUTPUT %s: %s\n  command: %s", label, err, cmd)
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

local median, fmt_rate = lib.median, lib.fmt_rate

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

lib.finish("%d run(s) FAILED or gave WRONG OUTPUT (see above)")
