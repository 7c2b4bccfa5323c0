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

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require("lib")
lib.prog = "bench-checkpoint"
local now, wall, die, fail, run, sh_quote = lib.now, lib.wall, lib.die, lib.fail, lib.run, lib.sh_quote
local slurp, spit, tail, median = lib.slurp, lib.spit, lib.tail, lib.median

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

local BENCH, REPO, DATA = lib.locate(arg[0])
local proc = lib.proc(REPO)   -- spawn / kill by PID

local SHARED = lib.find_shared(REPO, "gen_w2.lua")
local SLUICE = lib.find_sluice(REPO, arg[1])

local LINES, RUNS, KEYS = lib.env_sizes()

lib.lock(DATA)   -- one bench at a time per tree (shared with bench/run.lua)

-- W2's input, generated as bench/run.lua does (same stamp, so either reuses it).
local W2_IN, W2_EXP = lib.ensure_w2(SHARED, DATA, LINES)

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
-- bench/w2.conf, with its paths made absolute and the output moved
spit(W2_PLAIN, lib.w2_conf(BENCH, W2_IN, W2_OUT_PLAIN))
spit(W2_EXACT, lib.w2_conf(BENCH, W2_IN, W2_OUT_EXACT, '  guarantee = "exactly_once",\n'
  .. '  checkpoint = { every = "1s", store = "file://' .. W2_STATE .. '" },\n'))

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
  local err = lib.check(out, W2_EXP, true, true)
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
lib.write_key_ops(K_DIR, KEYS)
local function keys_conf(every)
  spit(K_CONF, lib.keys_conf("keys", every, "file://state", "out.txt"))
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
    if lib.all_keys_in(completed(slurp(K_LOG1) or ""), KEYS) then return "stable" end
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
      image = image, image_id = image_id, image_bytes = image and lib.file_size(image),
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
local fmt_rate = lib.fmt_rate

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
lib.finish("%d step(s) FAILED (see above)")
