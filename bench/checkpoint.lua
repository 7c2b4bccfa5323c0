-- bench/checkpoint.lua: what checkpoints cost (make bench-checkpoint).
--
-- usage: luajit bench/checkpoint.lua [path/to/sluice]
--
--   (a) W2 (bench/w2.conf: file -> split x2 -key-> count x2 -> file) with
--       guarantee = "exactly_once" and a checkpoint every 1 s, against the
--       same pipeline without a checkpoint block; RUNS runs each, alternating,
--       whole commands timed, every output checked against the expected
--       one; median input lines/s and the ratio (target >= 0.8).
--   (b) 1,000,000 distinct keys: an unbounded generator -> key x2 (key =
--       value % 1e6) -key-> hold x2 (ctx.state.n = 1), checkpoint every 1 s.
--       Once two checkpoints in a row have the same size (every key is in the
--       state) it is stopped with SIGTERM (a last checkpoint). Reported from
--       the coordinator's log line "checkpoint N completed: X bytes, Y ms
--       (store Z ms)": the image size (and the file's size on disk), Y (the
--       barrier's injection to the stored image) and Y - Z (injection to
--       every ack, encode included: an upper bound of the pause of a worker
--       while it snapshots its keys).
--   (c) recovery of those 1M keys: `sluice run` again (--restore latest);
--       the time from the spawn to the log line "source 'gen' resumes at
--       offset" (written after the image is read and decoded and every
--       worker has restored its key groups, just before the sources start).
--
-- env: BENCH_LINES (W2 input lines, default 2000000), BENCH_RUNS (default 3),
--      BENCH_KEYS (default 1000000), SLUICE_SHARED (as for bench/run.lua).
-- exit: 0 when every output was right and every step ran (targets are
--       reported, not enforced), 1 otherwise, 2 on bad setup.

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

local ts = ffi.new("struct sl_timespec")
local function clock(id)
  assert(ffi.C.clock_gettime(id, ts) == 0, "clock_gettime failed")
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local function now() return clock(1) end      -- CLOCK_MONOTONIC
local function wall() return clock(0) end     -- CLOCK_REALTIME (log lines)

local function realpath(p)
  local r = ffi.C.realpath(p, nil)
  if r == nil then return nil end
  local s = ffi.string(r)
  ffi.C.free(r)
  return s
end

local function die(code, ...)
  io.stderr:write("bench-checkpoint: ", string.format(...), "\n")
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

local function file_size(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

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

local function tail(s, n)
  local lines = {}
  for l in (s or ""):gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
  return table.concat(lines, "", math.max(1, #lines - n + 1))
end

-- "2026-11-24T12:24:17.395Z" -> seconds since the epoch (UTC).
local function log_time(stamp)
  local y, mo, d, h, mi, s = stamp:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):([%d%.]+)Z$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from civil (Howard Hinnant)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

-- ---- where things are ---------------------------------------------------------

local script = realpath(arg[0]) or die(2, "cannot resolve %s", arg[0])
local BENCH = script:match("^(.*)/[^/]+$")
local REPO = BENCH:match("^(.*)/[^/]+$")
local DATA = BENCH .. "/data"
package.path = REPO .. "/spec/?.lua;" .. package.path
local ok_proc, proc = pcall(require, "support.proc")   -- spawn / kill by PID
if not ok_proc then die(2, "needs luaposix and luasocket (spec/support/proc.lua): %s", proc) end

local SHARED
do
  local env = os.getenv("SLUICE_SHARED")
  local cands = env and { env .. "/bench", env } or { REPO .. "/../shared/bench" }
  for _, c in ipairs(cands) do
    if exists(c .. "/gen_w2.lua") then SHARED = realpath(c) break end
  end
  if not SHARED then die(2, "shared workloads not found (looked in %s)", table.concat(cands, ", ")) end
end

local SLUICE = arg[1] or "build/sluice"
SLUICE = realpath(SLUICE) or realpath(REPO .. "/" .. SLUICE)
  or die(2, "sluice binary not found: %s (build it: make build)", arg[1] or "build/sluice")

local LINES = tonumber(os.getenv("BENCH_LINES") or "2000000")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "3")
local KEYS = tonumber(os.getenv("BENCH_KEYS") or "1000000")
if not LINES or LINES < 1 or LINES % 1 ~= 0 then die(2, "bad BENCH_LINES") end
if not RUNS or RUNS < 1 or RUNS % 1 ~= 0 then die(2, "bad BENCH_RUNS") end
if not KEYS or KEYS < 1 or KEYS % 1 ~= 0 then die(2, "bad BENCH_KEYS") end

assert(run("mkdir -p " .. sh_quote(DATA)))
do -- one bench at a time per tree (shared with bench/run.lua)
  local fd = ffi.C.open(DATA .. "/.lock", bit.bor(2, 64), 420)
  if fd < 0 then die(2, "cannot open %s/.lock", DATA) end
  if ffi.C.flock(fd, bit.bor(2, 4)) ~= 0 then
    io.stderr:write("bench-checkpoint: another bench run holds ", DATA, "/.lock; waiting for it\n")
    if ffi.C.flock(fd, 2) ~= 0 then die(2, "flock failed") end
  end
end

-- W2's input, generated as bench/run.lua does (same stamp, so either reuses it).
local W2_IN, W2_EXP = DATA .. "/w2.txt", DATA .. "/w2.expected.txt"
do
  local gen = "gen_w2.lua"
  local args_after = { W2_IN, W2_EXP, tostring(LINES), "7", "10000", "1.0" }
  local gen_text = slurp(SHARED .. "/" .. gen) or die(2, "cannot read %s/%s", SHARED, gen)
  local h = 0
  for i = 1, #gen_text do h = (h * 31 + gen_text:byte(i)) % 2147483647 end
  local stamp = string.format("%s %s size=%d sum=%d\n", gen, table.concat(args_after, " "), #gen_text, h)
  local stamp_path = DATA .. "/w2.params"
  if not (slurp(stamp_path) == stamp and exists(W2_IN) and exists(W2_EXP)) then
    os.remove(stamp_path)
    local cmd = { "luajit", sh_quote(SHARED .. "/" .. gen) }
    for _, a in ipairs(args_after) do cmd[#cmd + 1] = sh_quote(a) end
    io.stderr:write("bench-checkpoint: generating w2: ", table.concat(cmd, " "), "\n")
    local ok, code = run(table.concat(cmd, " "))
    if not ok then die(1, "generator failed (%s)", tostring(code)) end
    spit(stamp_path, stamp)
  end
end

local function sorted_lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  local last = s:match("([^\n]+)$")
  if last then t[#t + 1] = last end
  table.sort(t)
  return t
end

local function check_sorted(out_path, exp_path)
  local got = slurp(out_path)
  if not got then return "no output file " .. out_path end
  if #got > 0 and got:byte(#got) ~= 10 then return "last line has no newline" end
  local g, e = sorted_lines(got), sorted_lines(assert(slurp(exp_path)))
  for i = 1, math.max(#g, #e) do
    if g[i] ~= e[i] then
      return string.format("sorted output differs from sorted %s at line %d of %d (expected %d): got %q, expected %q",
        exp_path, i, #g, #e, tostring(g[i]), tostring(e[i]))
    end
  end
  return nil
end

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  if n == 0 then return nil end
  if n % 2 == 1 then return c[(n + 1) / 2] end
  return (c[n / 2] + c[n / 2 + 1]) / 2
end

local failures = 0
local function fail(...)
  failures = failures + 1
  io.stderr:write("bench-checkpoint: ", string.format(...), "\n")
end

-- Completed checkpoints in a log: { id, bytes, ms, store_ms, final, t }.
local function completed(log)
  local t = {}
  for line in log:gmatch("[^\n]+") do
    local stamp, id, fin, bytes, ms, st = line:match(
      "^(%S+) INFO checkpoint: (%d+)(.-) completed: (%d+) bytes, ([%d%.]+) ms %(store ([%d%.]+) ms%)")
    if stamp then
      t[#t + 1] = { id = tonumber(id), bytes = tonumber(bytes), ms = tonumber(ms), store_ms = tonumber(st),
                    final = fin:match("final") ~= nil, t = log_time(stamp) }
    end
  end
  return t
end

-- ---- (a) W2 with and without checkpoints ----------------------------------------

local W2_PLAIN = DATA .. "/ckpt_w2_plain.conf"
local W2_EXACT = DATA .. "/ckpt_w2_exact.conf"
local W2_STATE = DATA .. "/ckpt_w2_state"
local W2_OUT_PLAIN = DATA .. "/ckpt_out_w2_plain.txt"
local W2_OUT_EXACT = DATA .. "/ckpt_out_w2_exact.txt"
do
  -- bench/w2.conf, with its paths made absolute and the output moved
  local base = assert(slurp(BENCH .. "/w2.conf"))
  local function variant(out, pipeline_extra)
    local s = base:gsub('"ops/', '"' .. BENCH .. '/ops/')
                  :gsub('path = "data/w2%.txt"', 'path = "' .. W2_IN .. '"')
                  :gsub('path = "data/out_w2%.txt"', 'path = "' .. out .. '"')
    if pipeline_extra then
      s = s:gsub('(pipeline "bench%-w2" {\n)', "%1" .. pipeline_extra:gsub("%%", "%%%%"))
    end
    assert(s:find(out, 1, true) and s:find(W2_IN, 1, true), "bench/w2.conf changed shape")
    return s
  end
  spit(W2_PLAIN, variant(W2_OUT_PLAIN))
  spit(W2_EXACT, variant(W2_OUT_EXACT, '  guarantee = "exactly_once",\n'
    .. '  checkpoint = { every = "1s", store = "file://' .. W2_STATE .. '" },\n'))
end

local function timed_w2(label, conf, out, log)
  os.remove(out)
  os.remove(out .. ".staging")
  run("rm -rf " .. sh_quote(W2_STATE))
  local cmd = sh_quote(SLUICE) .. " run " .. sh_quote(conf) .. " >/dev/null 2>" .. sh_quote(log)
  local t0 = now()
  local ok, code = run(cmd)
  local dt = now() - t0
  if not ok then
    fail("FAILED %s: exit %s\n  command: %s\n%s", label, tostring(code), cmd, tail(slurp(log), 15))
    return nil
  end
  local err = check_sorted(out, W2_EXP)
  if err then fail("WRONG OUTPUT %s: %s\n  command: %s", label, err, cmd) return nil end
  return dt
end

io.stderr:write(string.format("bench-checkpoint: W2 %d lines, %d runs each, sluice = %s\n", LINES, RUNS, SLUICE))
local plain_t, exact_t, exact_ckpts = {}, {}, {}
local W2_LOG_PLAIN, W2_LOG_EXACT = DATA .. "/ckpt_w2_plain.log", DATA .. "/ckpt_w2_exact.log"
for r = 1, RUNS do
  local p = timed_w2("W2 plain run " .. r, W2_PLAIN, W2_OUT_PLAIN, W2_LOG_PLAIN)
  if p then plain_t[#plain_t + 1] = p end
  local e = timed_w2("W2 exactly_once run " .. r, W2_EXACT, W2_OUT_EXACT, W2_LOG_EXACT)
  if e then
    exact_t[#exact_t + 1] = e
    local log = slurp(W2_LOG_EXACT) or ""
    if not log:match("guarantee exactly_once") then fail("W2 exactly_once run %d: not exactly_once:\n%s", r, tail(log, 10)) end
    local n = #completed(log)
    exact_ckpts[#exact_ckpts + 1] = n
  end
  io.stderr:write(string.format("bench-checkpoint: W2 run %d/%d: no checkpoints %s, exactly_once %s\n", r, RUNS,
    p and string.format("%.3f s", p) or "FAILED", e and string.format("%.3f s", e) or "FAILED"))
end

-- ---- (b) 1M keys: checkpoint size and stall ----------------------------------------

local K_DIR = DATA .. "/ckpt_keys"
local K_CONF = K_DIR .. "/keys.conf"
run("rm -rf " .. sh_quote(K_DIR))
assert(run("mkdir -p " .. sh_quote(K_DIR)))
spit(K_DIR .. "/key.lua", string.format([[
local op = {}
local tostring, tonumber = tostring, tonumber
function op.process(ctx, v) ctx:emit(v, tostring(tonumber(v) %% %d)) end
return op
]], KEYS))
spit(K_DIR .. "/hold.lua", [[
local op = {}
function op.process(ctx, _) ctx.state.n = 1 end
return op
]])
local function keys_conf(every)
  spit(K_CONF, string.format([[
pipeline "keys" {
  workers = 2,
  guarantee = "exactly_once",
  checkpoint = { every = "%s", store = "file://state", keep = 2 },
}
source   "gen"  { kind = "generator" }
operator "key"  { script = "key.lua", from = "gen", parallelism = 2 }
operator "hold" { script = "hold.lua", from = "key", grouping = "key", parallelism = 2 }
sink     "out"  { kind = "file", path = "out.txt", from = "hold" }
]], every))
end

local function newest_image(state)
  local best, best_id
  local p = io.popen("ls " .. sh_quote(state) .. " 2>/dev/null")
  for f in p:lines() do
    local id = f:match("^chk%-(%d+)%.ckpt$")
    if id and (not best_id or tonumber(id) > best_id) then best, best_id = state .. "/" .. f, tonumber(id) end
  end
  p:close()
  return best, best_id
end

local build, build_stop, build_wall
local K_LOG1, K_LOG2 = K_DIR .. "/build.log", K_DIR .. "/restore.log"
do
  keys_conf("1s")
  io.stderr:write(string.format("bench-checkpoint: building %d keys (unbounded generator, checkpoint every 1 s)\n", KEYS))
  local t0 = now()
  local pid = proc.spawn({ SLUICE, "run", K_CONF }, { stdout = "/dev/null", stderr = K_LOG1 })
  local stable = proc.wait_for(function()
    if not proc.alive(pid) then return "ended" end
    local c = completed(slurp(K_LOG1) or "")
    local n = #c
    if n >= 3 and c[n].bytes == c[n - 1].bytes and c[n].bytes > KEYS then return "stable" end
    return nil
  end, 300, 0.1)
  if stable ~= "stable" then
    fail("(b) the state did not reach %d keys (%s); log:\n%s", KEYS, tostring(stable), tail(slurp(K_LOG1), 15))
    proc.stop(pid, "KILL")
  else
    local before = completed(slurp(K_LOG1) or "")
    build = before[#before]
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 120)
    build_wall = now() - t0
    local log = slurp(K_LOG1) or ""
    if code ~= 0 then
      fail("(b) SIGTERM'd run exited %s; log:\n%s", tostring(code), tail(log, 15))
      proc.stop(pid, "KILL")
    else
      local after = completed(log)
      if #after > #before then build_stop = after[#after] end
    end
  end
end

-- ---- (c) recovery of the 1M keys ------------------------------------------------------

local recovery
if build then
  local image, image_id = newest_image(K_DIR .. "/state")
  local t_spawn = wall()
  local pid = proc.spawn({ SLUICE, "run", K_CONF }, { stdout = "/dev/null", stderr = K_LOG2 })
  local got = proc.wait_for(function()
    local log = slurp(K_LOG2) or ""
    if log:match("source: 'gen' resumes at offset") then return "resumed" end
    if not proc.alive(pid) then return "ended" end
    return nil
  end, 300, 0.01)
  local log = slurp(K_LOG2) or ""
  proc.stop(pid, "TERM", 120)
  if got ~= "resumed" then
    fail("(c) the restart did not resume (%s); log:\n%s", tostring(got), tail(log, 15))
  else
    local first = log:match("^(%S+) ")
    local rs = log:match("\n(%S+) INFO checkpoint: restoring checkpoint")
    local rid = log:match("restoring checkpoint (%d+)")
    local res = log:match("\n(%S+) INFO source: 'gen' resumes at offset")
    recovery = {
      image = image, image_id = image_id, image_bytes = image and file_size(image),
      restored_id = tonumber(rid),
      first_log = first and (log_time(first) - t_spawn),
      restoring = rs and (log_time(rs) - t_spawn),
      resumed = res and (log_time(res) - t_spawn),
    }
  end
end

-- ---- the table ------------------------------------------------------------------------

local function f3(x) return x and string.format("%.3f", x) or "-" end
local function rate(t) local m = median(t) return m and LINES / m or nil end
local function fmt_rate(x)
  if not x then return "-" end
  if x >= 1e6 then return string.format("%.3f M", x / 1e6) end
  return string.format("%.1f k", x / 1e3)
end

print("")
print(string.format("sluice checkpoint bench, %s", os.date("!%Y-%m-%dT%H:%M:%SZ")))
print("")
print(string.format("(a) W2, %d input lines, median of %d runs each, alternating", LINES, RUNS))
local rp, re = rate(plain_t), rate(exact_t)
local ratio = (rp and re) and re / rp or nil
print(string.format("  %-44s %12s %10s", "pipeline", "lines/s", "median s"))
print(string.format("  %-44s %12s %10s", "no checkpoint block (at_least_once)", fmt_rate(rp), f3(median(plain_t))))
print(string.format("  %-44s %12s %10s", "exactly_once, checkpoint every 1 s", fmt_rate(re), f3(median(exact_t))))
print(string.format("  ratio %s (target >= 0.80): %s", ratio and string.format("%.2fx", ratio) or "-",
  (#plain_t < RUNS or #exact_t < RUNS) and "FAILED" or (ratio >= 0.8 and "PASS" or "BELOW")))
local pt, et = {}, {}
for i, v in ipairs(plain_t) do pt[i] = f3(v) end
for i, v in ipairs(exact_t) do et[i] = f3(v) end
print(string.format("  times (s): no checkpoint %s; exactly_once %s (checkpoints completed per run, final included: %s)",
  table.concat(pt, " "), table.concat(et, " "), table.concat(exact_ckpts, " ")))
print("  outputs checked (sorted) against " .. W2_EXP)
print("")
print(string.format("(b) %d distinct keys (ctx.state.n = 1), 2 workers, hold x2", KEYS))
if build then
  print(string.format("  %-44s %14s %10s %10s %12s", "checkpoint", "image bytes", "total ms", "store ms", "snapshot ms"))
  print(string.format("  %-44s %14d %10.0f %10.0f %12.0f", "periodic (#" .. build.id .. ", all keys in)",
    build.bytes, build.ms, build.store_ms, build.ms - build.store_ms))
  if build_stop then
    print(string.format("  %-44s %14d %10.0f %10.0f %12.0f", "on SIGTERM (#" .. build_stop.id .. ")",
      build_stop.bytes, build_stop.ms, build_stop.store_ms, build_stop.ms - build_stop.store_ms))
  end
  print(string.format("  bytes per key: %.1f; run to %d keys + stop: %.1f s", build.bytes / KEYS, KEYS, build_wall or 0))
  print("  total = barrier injected -> image stored; snapshot = total - store: barrier travel, every")
  print("  instance's snapshot and the image encode (an upper bound of a worker's stall)")
else
  print("  FAILED (see above)")
end
print("")
print(string.format("(c) recovery of %d keys (sluice run, --restore latest)", KEYS))
if recovery then
  print(string.format("  image #%s, %s bytes; restored #%s", tostring(recovery.image_id),
    tostring(recovery.image_bytes), tostring(recovery.restored_id)))
  print(string.format("  %-60s %8s", "from spawn to", "s"))
  print(string.format("  %-60s %8s", "first log line (conf loaded)", f3(recovery.first_log)))
  print(string.format("  %-60s %8s", "'restoring checkpoint' (image read, decoded)", f3(recovery.restoring)))
  print(string.format("  %-60s %8s", "'resumes at offset' (every key group in its worker)", f3(recovery.resumed)))
else
  print("  FAILED (see above)")
end
print("")
print("logs: " .. W2_LOG_EXACT .. ", " .. K_LOG1 .. ", " .. K_LOG2)

run("rm -rf " .. sh_quote(W2_STATE) .. " " .. sh_quote(K_DIR .. "/state"))
if failures > 0 then
  io.stderr:write(string.format("bench-checkpoint: %d step(s) FAILED (see above)\n", failures))
  os.exit(1)
end
os.exit(0)
