-- bench/redis.lua: sluice with Redis against sluice with files (make bench-redis).
--
-- usage: luajit bench/redis.lua [path/to/sluice]
--
-- Starts its own redis-server (a free loopback port, no persistence, data in
-- bench/data/redis/) and stops it by its PID at the end.
--
--   (a) W2 (the shared keyed word count, BENCH_LINES lines) three ways, in
--       the same run, RUNS runs each, alternating:
--         file -> file   bench/w2.conf as is (totals at end of input), the
--                        whole command timed;
--         redis (alo)    the W2 lines XADDed beforehand to a stream as field
--                        v (loading not timed); redis source -> split x2
--                        -key-> count x2 -> redis sink HSET into a hash,
--                        at_least_once, checkpoint every 1 s to redis://;
--         redis (eo)     the same under exactly_once.
--       A Redis Stream never ends, so the count operator cannot emit its
--       totals in close: it emits a key's running total from a processing-
--       time timer 100 ms after the key changed, so at most ~10 writes per
--       key and second (the op is written to data/redis_w2/count.lua). The time is from the spawn until HGETALL of the
--       hash equals W2's expected counts (polled every 50 ms), so it
--       includes up to ~100 ms of timer delay and the sink's last commit.
--       Each run reads the stream through its own consumer group (start =
--       "first") and writes its own hash. Reported: median input lines/s
--       and the ratio redis / file.
--   (b) one checkpoint of BENCH_KEYS (1 M) keys to redis:// against file://:
--       an unbounded generator -> key x2 (key = value % KEYS) -key-> hold x2
--       (ctx.state.n = 1), checkpoint every 1 s; once two checkpoints in a
--       row have the same size (every key in the state) the line
--       "checkpoint N completed: X bytes, Y ms (store Z ms)" of the last one
--       is reported (Y: barrier to stored image, Z: the store's write), then
--       the run is SIGTERMed.
--
-- env: BENCH_LINES (default 2000000), BENCH_RUNS (default 3), BENCH_KEYS
--      (default 1000000), SLUICE_SHARED (as for bench/run.lua).
-- exit: 0 when every run gave the right result, 1 otherwise, 2 on bad setup.

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require("lib")
lib.prog = "bench-redis"
local now, die, fail, run, sh_quote = lib.now, lib.die, lib.fail, lib.run, lib.sh_quote
local slurp, spit, tail, median = lib.slurp, lib.spit, lib.tail, lib.median

-- ---- where things are -------------------------------------------------------

local BENCH, REPO, DATA = lib.locate(arg[0])
local proc = lib.proc(REPO)   -- spawn / kill by PID
local resp = require("support.resp")

local SHARED = lib.find_shared(REPO, "gen_w2.lua")
local SLUICE = lib.find_sluice(REPO, arg[1])

local LINES, RUNS, KEYS = lib.env_sizes()
if not run("command -v redis-server >/dev/null 2>&1") then
  die(2, "redis-server not found (apt-get install redis-server)")
end

lib.lock(DATA)   -- one bench at a time per tree (shared with bench/run.lua, bench/checkpoint.lua)

-- W2's input, generated as bench/run.lua does (same stamp, so either reuses it).
local W2_IN, W2_EXP = lib.ensure_w2(SHARED, DATA, LINES)

-- The redis-server: no persistence (the bench measures sluice, not fsync).
local RDIR = DATA .. "/redis"
run("rm -rf " .. sh_quote(RDIR))
local srv = resp.server(RDIR, { aof = false })
local function cleanup()
  srv:stop()
  proc.reap_all()
end
local r = assert(resp.connect(srv.port))

-- ---- (a) W2: redis -> redis against file -> file ---------------------------------

local want = {}
local n_words = 0
for l in io.lines(W2_EXP) do
  local w, c = l:match("^(%S+) (%d+)$")
  if w then want[w] = c; n_words = n_words + 1 end
end

io.stderr:write(string.format("bench-redis: loading %d W2 lines into stream w2 (redis-server on port %d)\n",
  LINES, srv.port))
local t_load = now()
do
  local batch, n = {}, 0
  for l in io.lines(W2_IN) do
    batch[#batch + 1] = { "XADD", "w2", "*", "v", l }
    n = n + 1
    if #batch == 20000 then assert(r:pipeline(batch)); batch = {} end
  end
  if #batch > 0 then assert(r:pipeline(batch)) end
  if n ~= LINES then die(1, "w2.txt has %d lines, expected %d", n, LINES) end
end
t_load = now() - t_load
local mem = (r:call("INFO", "memory") or ""):match("used_memory_human:(%S+)")

local OPS = DATA .. "/redis_w2"
assert(run("mkdir -p " .. sh_quote(OPS)))
spit(OPS .. "/count.lua", [[
-- W2 count for an endless source: the same per-record counter as
-- bench/ops/w2_count.lua; a key's running total is emitted from a
-- processing-time timer 100 ms after the key first changed since its last
-- emit (wall clock through ffi: the conf grants allow = { "ffi" }), so each
-- key is written at most ~10 times a second.
local op = {}
pcall(ffi.cdef, "struct sl_bench_ts { long s; long ns; }; int clock_gettime(int, struct sl_bench_ts *);")
local ts = ffi.new("struct sl_bench_ts")
local function now_ms()
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.s) * 1000 + math.floor(tonumber(ts.ns) / 1e6)
end

function op.process(ctx, _)
  local st = ctx.state; st.n = (st.n or 0) + 1
  if not st.armed then
    st.armed = true
    ctx:timer(now_ms() + 100)
  end
end

function op.timer(ctx, t)
  local st = ctx.state
  st.armed = nil
  ctx:emit(st.n, ctx.key)
end

return op
]])

local function redis_conf(tag, guarantee)
  local conf = OPS .. "/" .. tag .. ".conf"
  spit(conf, string.format([[
pipeline "bench-redis-%s" {
  workers = 2,
  guarantee = "%s",
  checkpoint = { every = "1s", store = "%s" },
}
source   "in"    { kind = "redis", url = "%s", stream = "w2", group = "%s", start = "first" }
operator "split" { script = "%s/ops/w2_split.lua", from = "in", parallelism = 2 }
operator "count" { script = "count.lua", from = "split", grouping = "key", parallelism = 2,
                   allow = { "ffi" } }
sink     "out"   { kind = "redis", url = "%s", command = "hset", key = "%s", from = "count" }
]], tag, guarantee, srv:url(0, "bench-" .. tag), srv:url(0), tag, BENCH, srv:url(0), "counts-" .. tag))
  return conf
end

local FILE_CONF = OPS .. "/file.conf"
local FILE_OUT = OPS .. "/out_w2.txt"
spit(FILE_CONF, lib.w2_conf(BENCH, W2_IN, FILE_OUT))

local function check_file()
  local got = {}
  for l in io.lines(FILE_OUT) do
    local w, c = l:match("^(%S+) (%d+)$")
    if not w then return "bad line " .. l end
    got[w] = c
  end
  for w, c in pairs(want) do if got[w] ~= c then return w .. ": " .. tostring(got[w]) .. ", expected " .. c end end
  return nil
end

local function timed_file(label)
  os.remove(FILE_OUT)
  local log = OPS .. "/file.log"
  local cmd = sh_quote(SLUICE) .. " run " .. sh_quote(FILE_CONF) .. " >/dev/null 2>" .. sh_quote(log)
  local t0 = now()
  local ok, code = run(cmd)
  local dt = now() - t0
  if not ok then fail("FAILED %s: exit %s\n  command: %s\n%s", label, tostring(code), cmd, tail(slurp(log), 15)) return nil end
  local err = check_file()
  if err then fail("WRONG OUTPUT %s: %s", label, err) return nil end
  return dt
end

local function hash_done(key)
  local n = r:call("HLEN", key)
  if n ~= n_words then return false end
  local h = assert(r:hgetall(key))
  for w, c in pairs(want) do if h[w] ~= c then return false end end
  return true
end

local run_no = 0
local function timed_redis(label, guarantee)
  run_no = run_no + 1
  local tag = guarantee == "exactly_once" and "eo" or "alo"
  tag = tag .. run_no
  local conf = redis_conf(tag, guarantee)
  local log = OPS .. "/" .. tag .. ".log"
  local t0 = now()
  local pid = proc.spawn({ SLUICE, "run", conf }, { stdout = "/dev/null", stderr = log })
  local done = proc.wait_for(function()
    if not proc.alive(pid) then return "ended" end
    return hash_done("counts-" .. tag) and "done"
  end, 600, 0.05)
  local dt = now() - t0
  local code = proc.stop(pid, "TERM", 60)
  local text = slurp(log) or ""
  if done ~= "done" then
    fail("FAILED %s: %s (exit %s)\n%s", label, tostring(done or "timeout"), tostring(code), tail(text, 15))
    return nil
  end
  if code ~= 0 then fail("%s: exit %s after SIGTERM\n%s", label, tostring(code), tail(text, 15)) end
  if not text:match("guarantee " .. guarantee) then fail("%s: not %s:\n%s", label, guarantee, tail(text, 10)) end
  -- free the run's memory in Redis
  r:call("DEL", "counts-" .. tag)
  r:call("XGROUP", "DESTROY", "w2", tag)
  return dt
end

io.stderr:write(string.format("bench-redis: W2 %d lines, %d runs each, sluice = %s\n", LINES, RUNS, SLUICE))
local file_t, alo_t, eo_t = {}, {}, {}
for i = 1, RUNS do
  local f = timed_file("W2 file run " .. i)
  if f then file_t[#file_t + 1] = f end
  local a = timed_redis("W2 redis at_least_once run " .. i, "at_least_once")
  if a then alo_t[#alo_t + 1] = a end
  local e = timed_redis("W2 redis exactly_once run " .. i, "exactly_once")
  if e then eo_t[#eo_t + 1] = e end
  io.stderr:write(string.format("bench-redis: W2 run %d/%d: file %s, redis alo %s, redis eo %s\n", i, RUNS,
    f and string.format("%.3f s", f) or "FAILED", a and string.format("%.3f s", a) or "FAILED",
    e and string.format("%.3f s", e) or "FAILED"))
end
r:call("DEL", "w2")

-- ---- (b) 1M keys: one checkpoint to redis:// against file:// ---------------------

local K_DIR = DATA .. "/redis_keys"
run("rm -rf " .. sh_quote(K_DIR))
assert(run("mkdir -p " .. sh_quote(K_DIR)))
lib.write_key_ops(K_DIR, KEYS)

local function completed(log)
  local t = {}
  for line in log:gmatch("[^\n]+") do
    local id, bytes, ms, st = line:match("INFO checkpoint: (%d+)[^\n]- completed: (%d+) bytes, ([%d%.]+) ms %(store ([%d%.]+) ms%)")
    if id then t[#t + 1] = { id = tonumber(id), bytes = tonumber(bytes), ms = tonumber(ms), store_ms = tonumber(st) } end
  end
  return t
end

local function keys_run(label, store)
  local conf = K_DIR .. "/" .. label .. ".conf"
  spit(conf, lib.keys_conf("keys-" .. label, "1s", store, "out-" .. label .. ".txt"))
  local log = K_DIR .. "/" .. label .. ".log"
  io.stderr:write(string.format("bench-redis: %d keys, store %s\n", KEYS, store))
  local pid = proc.spawn({ SLUICE, "run", conf }, { stdout = "/dev/null", stderr = log })
  local stable = proc.wait_for(function()
    if not proc.alive(pid) then return "ended" end
    if lib.all_keys_in(completed(slurp(log) or ""), KEYS) then return "stable" end
    return nil
  end, 300, 0.1)
  local c = completed(slurp(log) or "")
  local code = proc.stop(pid, "TERM", 120)
  if stable ~= "stable" then
    fail("(b) %s: the state did not reach %d keys (%s); log:\n%s", label, KEYS, tostring(stable), tail(slurp(log), 15))
    return nil
  end
  if code ~= 0 then fail("(b) %s: exit %s after SIGTERM; log:\n%s", label, tostring(code), tail(slurp(log), 15)) end
  -- the last two periodic ones (same size): the median-free pair
  return c[#c], c[#c - 1]
end

local kf1, kf2 = keys_run("file", "file://state")
local kr1, kr2 = keys_run("redis", srv:url(0, "bench-keys"))
local img_len = r:call("STRLEN", "bench-keys:chk:" .. tostring(r:call("GET", "bench-keys:latest")))
cleanup()
run("rm -rf " .. sh_quote(K_DIR .. "/state") .. " " .. sh_quote(RDIR))

-- ---- the table --------------------------------------------------------------------

local function f3(x) return x and string.format("%.3f", x) or "-" end
local function rate(t) local m = median(t) return m and LINES / m or nil end
local fmt_rate = lib.fmt_rate
local function ratio(a, b) return (a and b) and string.format("%.2fx", a / b) or "-" end

print("")
print(string.format("sluice redis bench, %s, redis-server %s", os.date("!%Y-%m-%dT%H:%M:%SZ"),
  (io.popen("redis-server --version"):read("*l") or ""):match("v=(%S+)") or "?"))
print("")
print(string.format("(a) W2, %d input lines, median of %d runs each, alternating", LINES, RUNS))
print(string.format("  stream loaded with pipelined XADDs in %.1f s (not timed below); redis used_memory %s",
  t_load, tostring(mem)))
local rf, ra, re = rate(file_t), rate(alo_t), rate(eo_t)
print(string.format("  %-58s %12s %10s %8s", "pipeline", "lines/s", "median s", "ratio"))
print(string.format("  %-58s %12s %10s %8s", "file -> file (bench/w2.conf, totals at close)", fmt_rate(rf), f3(median(file_t)), "1.00x"))
print(string.format("  %-58s %12s %10s %8s", "redis stream -> HSET, at_least_once, ckpt 1 s redis://", fmt_rate(ra), f3(median(alo_t)), ratio(ra, rf)))
print(string.format("  %-58s %12s %10s %8s", "redis stream -> HSET, exactly_once, ckpt 1 s redis://", fmt_rate(re), f3(median(eo_t)), ratio(re, rf)))
local function list(t) local o = {} for i, v in ipairs(t) do o[i] = f3(v) end return table.concat(o, " ") end
print(string.format("  times (s): file %s; redis alo %s; redis eo %s", list(file_t), list(alo_t), list(eo_t)))
print("  redis times: spawn -> HGETALL equals the expected counts (polled every 50 ms)")
print("")
print(string.format("(b) one checkpoint of %d keys (ctx.state.n = 1), 2 workers, hold x2", KEYS))
print(string.format("  %-12s %-8s %14s %10s %10s", "store", "id", "image bytes", "total ms", "store ms"))
for _, row in ipairs({ { "file://", kf1, kf2 }, { "redis://", kr1, kr2 } }) do
  for _, c in ipairs({ row[2], row[3] }) do
    if c then
      print(string.format("  %-12s %-8d %14d %10.0f %10.0f", row[1], c.id, c.bytes, c.ms, c.store_ms))
    end
  end
end
if kf1 and kr1 then
  print(string.format("  redis:// / file:// (last periodic checkpoint): total %.2fx, store %.2fx; redis image STRLEN %s",
    kr1.ms / kf1.ms, kr1.store_ms / math.max(1, kf1.store_ms), tostring(img_len)))
end
print("  total = barrier injected -> image stored; store = writing the image (file: write + fsync +")
print("  rename; redis: SET of the image + MULTI/EXEC of the index and latest)")
print("")
print("logs: " .. OPS .. "/*.log, " .. K_DIR .. "/*.log")

lib.finish("%d step(s) FAILED (see above)")
