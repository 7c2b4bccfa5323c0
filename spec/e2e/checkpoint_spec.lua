-- End to end: checkpoints (docs/checkpoints.md). A keyed count killed with
-- SIGKILL at random instants and restarted writes every per-key update
-- exactly once (exactly_once) or at least once (at_least_once); a SIGTERM'd
-- pipeline restored with another parallelism and worker count gives the
-- same output; a torn or corrupt newest checkpoint falls back to the one
-- before it; --restore none|ID; a finished pipeline has nothing left to
-- run; `check` refuses exactly_once with a tcp source.
--
-- The random sleeps come from math.randomseed(SEED): SEED is printed, and
-- SLUICE_SEED=N replays a run's kill instants.
local proc = require("support.proc")

local SEED = tonumber(os.getenv("SLUICE_SEED") or "") or 20261124
print("checkpoint_spec: seed " .. SEED .. " (SLUICE_SEED=" .. SEED .. " to replay)")
math.randomseed(SEED)

-- key: v % params.keys (default 50) as "kX".
local KEY = [[
local op = {}
local keys
function op.open(ctx) keys = ctx.params.keys or 50 end
function op.process(ctx, v) ctx:emit(v, "k" .. (tonumber(v) % keys)) end
return op
]]

-- count: one line per record with the key's running count; totals in close.
local COUNT = [[
local op = {}
function op.process(ctx, v)
  local st = ctx.state
  st.n = (st.n or 0) + 1
  ctx:emit(ctx.key .. " " .. st.n)
end
function op.close(ctx)
  if not ctx.params.totals then return end
  for key, st in ctx:each_state() do ctx:emit("total " .. key .. " " .. st.n) end
end
return op
]]

-- o: count, rate, keys, p_key, p_count, workers, guarantee, every, keep,
-- totals (close emits "total kX N").
local function conf_text(o)
  return string.format([[
pipeline "ck" {
  workers = %d,%s
  checkpoint = { every = "%s", store = "file://state", keep = %d },
}
source   "gen"   { kind = "generator", count = %d, rate = %d }
operator "key"   { script = "key.lua", from = "gen", parallelism = %d,
                   params = { keys = %d } }
operator "count" { script = "count.lua", from = "key", grouping = "key",
                   parallelism = %d, params = { totals = %s } }
sink     "out"   { kind = "file", path = "out.txt", from = "count" }
]], o.workers or 2,
    o.guarantee and ('\n  guarantee = "' .. o.guarantee .. '",') or "",
    o.every or "100ms", o.keep or 3, o.count, o.rate or 0, o.p_key or 2,
    o.keys or 50, o.p_count or 2, tostring(o.totals or false))
end

-- The sorted lines a clean run gives: "kX 1".."kX n" for each key, and the
-- totals when asked.
local function expected(count, keys, totals)
  local per = {}
  for v = 1, count do
    local k = "k" .. (v % keys)
    per[k] = (per[k] or 0) + 1
  end
  local t = {}
  for k, n in pairs(per) do
    for i = 1, n do t[#t + 1] = k .. " " .. i end
    if totals then t[#t + 1] = "total " .. k .. " " .. n end
  end
  table.sort(t)
  return t
end

-- Compares two sorted lists; nil when equal, else a short description of the
-- first differences (missing / extra lines, counts).
local function diff(got, want)
  local i, j, missing, extra = 1, 1, {}, {}
  while i <= #got or j <= #want do
    if got[i] == want[j] then i, j = i + 1, j + 1
    elseif j > #want or (i <= #got and got[i] < want[j]) then
      extra[#extra + 1] = got[i]; i = i + 1
    else
      missing[#missing + 1] = want[j]; j = j + 1
    end
  end
  if #missing == 0 and #extra == 0 then return nil end
  local function head(t)
    local h = {}
    for k = 1, math.min(8, #t) do h[k] = string.format("%q", t[k]) end
    return table.concat(h, ", ") .. (#t > 8 and ", ..." or "")
  end
  return string.format("%d lines, expected %d; %d missing (%s); %d extra or duplicated (%s)",
    #got, #want, #missing, head(missing), #extra, head(extra))
end

local function ckpt_files(state)
  local t = {}
  local ok, list = pcall(require("posix.dirent").dir, state)
  if not ok then return t end
  for _, f in ipairs(list) do
    local id = f:match("^chk%-(%d+)%.ckpt$")
    if id then t[#t + 1] = { name = f, id = tonumber(id) } end
  end
  table.sort(t, function(a, b) return a.id < b.id end)
  return t
end

describe("e2e checkpoints", function()
  local dir, runs

  before_each(function()
    dir = proc.tmpdir()
    runs = 0
    proc.write_tree(dir, { ["key.lua"] = KEY, ["count.lua"] = COUNT })
  end)

  after_each(function()
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function conf(o)
    return proc.write_file(dir .. "/p.conf", conf_text(o))
  end

  -- Starts `sluice run p.conf FLAGS`; its stderr goes to dir/stderr-N.
  local function start(flags)
    runs = runs + 1
    local err = dir .. "/stderr-" .. runs
    local pid = proc.start_sluice(dir .. "/p.conf", flags, { stderr = err, stdout = dir .. "/stdout-" .. runs })
    return pid, err
  end

  -- Runs to its end: exit code, stderr text.
  local function run(flags, timeout)
    local pid, err = start(flags)
    local code = proc.wait(pid, timeout or 60)
    if code == nil then proc.kill(pid, "KILL"); proc.wait(pid, 5) end
    return code, proc.read_file(err) or ""
  end

  local function out_sorted()
    return proc.sorted(proc.file_lines(dir .. "/out.txt"))
  end

  -- Waits until the run's stderr shows at least n completed checkpoints.
  local function wait_checkpoints(pid, err, n, timeout)
    return proc.wait_for(function()
      local s = proc.read_file(err) or ""
      local c = 0
      for _ in s:gmatch("checkpoint: %d+ completed") do c = c + 1 end
      return c >= n or not proc.alive(pid)
    end, timeout or 20, 0.02)
  end

  -- Starts a run, lets it take n checkpoints, SIGTERMs it: it must exit 0
  -- without having reached the end of its input.
  local function run_and_term(flags, n)
    local pid, err = start(flags)
    wait_checkpoints(pid, err, n)
    assert.is_true(proc.alive(pid), "the run ended before it could be stopped midway; stderr:\n"
      .. proc.tail(proc.read_file(err)))
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 15)
    local s = proc.read_file(err) or ""
    assert.are.equal(0, code, "exit after SIGTERM; stderr:\n" .. proc.tail(s))
    assert.is_falsy(s:match("nothing left to run"), s)
    return s
  end

  it("exactly_once: 20 SIGKILLs at random instants, then a run to the end: each update once", function()
    -- rate 2000/s: the 30000 records need ~15 s of running, longer than the
    -- 20 runs last together (0.2-0.9 s each), so the kills land while the
    -- pipeline is running (at 6000/s the input is drained after ~9 kills).
    conf({ count = 30000, rate = 2000, keys = 50, keep = 3 })
    local live_kills, log = 0, {}
    for i = 1, 20 do
      local pid, err = start()
      local d = 0.2 + math.random() * 0.7
      proc.sleep(d)
      local was_alive = proc.alive(pid)
      proc.kill(pid, "KILL")
      local code = proc.wait(pid, 5)
      if was_alive and code == "signal 9" then live_kills = live_kills + 1
      else
        -- it ended by itself: only "nothing left to run" (exit 0) is fine
        assert.are.equal(0, code, "run " .. i .. " ended by itself; stderr:\n" .. proc.tail(proc.read_file(err)))
      end
      local s = proc.read_file(err) or ""
      log[#log + 1] = string.format("run %d: %.2f s, %s, restored %s", i, d, tostring(code),
        s:match("restoring checkpoint (%d+)") or "none")
    end
    print("checkpoint_spec: " .. table.concat(log, "; "))
    assert.is_true(live_kills >= 15, live_kills .. " of 20 kills hit a running pipeline")
    local code, s = run({}, 60)
    assert.are.equal(0, code, "last run; stderr:\n" .. proc.tail(s))
    local got = out_sorted()
    local d = diff(got, expected(30000, 50))
    assert.is_nil(d, d)
    assert.is_falsy(proc.exists(dir .. "/out.txt.staging") and #proc.read_file(dir .. "/out.txt.staging") > 0,
      "the staging file still holds bytes after the final checkpoint")
    local files = ckpt_files(dir .. "/state")
    assert.is_true(#files >= 1 and #files <= 3, #files .. " images in state/ (keep = 3)")
    assert.is_truthy(proc.exists(dir .. "/state/latest"))
  end)

  it("at_least_once: SIGKILLs and restarts lose no update", function()
    conf({ count = 12000, rate = 4000, keys = 50, guarantee = "at_least_once" })
    for i = 1, 4 do
      local pid, err = start()
      proc.sleep(0.4 + math.random() * 0.4)
      proc.kill(pid, "KILL")
      local code = proc.wait(pid, 5)
      assert.is_truthy(code == "signal 9" or code == 0, "run " .. i .. ": " .. tostring(code)
        .. "; stderr:\n" .. proc.tail(proc.read_file(err)))
    end
    local code, s = run({}, 60)
    assert.are.equal(0, code, "last run; stderr:\n" .. proc.tail(s))
    assert.is_truthy(s:match("guarantee at_least_once"), s)
    local have = {}
    for _, l in ipairs(proc.file_lines(dir .. "/out.txt")) do
      assert.is_truthy(l:match("^k%d+ %d+$"), "unexpected line " .. string.format("%q", l))
      have[l] = true
    end
    local missing = {}
    for _, l in ipairs(expected(12000, 50)) do
      if not have[l] then missing[#missing + 1] = l end
    end
    assert.are.equal(0, #missing, #missing .. " updates lost, e.g. "
      .. table.concat(missing, ", ", 1, math.min(8, #missing)))
  end)

  for _, case in ipairs({
    { from = 2, to = 4, w1 = 2, w2 = 3 },
    { from = 4, to = 1, w1 = 3, w2 = 1 },
  }) do
    it(string.format("rescale: SIGTERM with count x%d on %d workers, restore with x%d on %d workers: same output",
        case.from, case.w1, case.to, case.w2), function()
      local o = { count = 20000, rate = 8000, keys = 500, p_count = case.from, totals = true }
      conf(o)
      local s1 = run_and_term({ "--workers", tostring(case.w1) }, 3)
      assert.is_truthy(s1:match("checkpoint: %d+ completed"), s1)
      local partial = #proc.file_lines(dir .. "/out.txt")
      assert.is_true(partial < 20000, "the first run wrote " .. partial .. " lines: it was not stopped midway")
      o.p_count = case.to
      conf(o)
      local code, s = run({ "--workers", tostring(case.w2) }, 60)
      assert.are.equal(0, code, "restored run; stderr:\n" .. proc.tail(s))
      assert.is_truthy(s:match("restoring checkpoint %d+"), s)
      local got = out_sorted()
      local d = diff(got, expected(20000, 500, true))
      assert.is_nil(d, d)
      -- and a clean run of the same conf (--restore none) gives the same lines
      local code2, s2 = run({ "--restore", "none", "--workers", tostring(case.w2) }, 60)
      assert.are.equal(0, code2, "clean run; stderr:\n" .. proc.tail(s2))
      assert.are.same(got, out_sorted())
    end)
  end

  it("a corrupt or torn newest checkpoint: falls back to the one before, output exact", function()
    conf({ count = 12000, rate = 3000, keys = 50 })
    run_and_term({}, 4)
    -- flip bytes in the middle of the newest image
    local files = ckpt_files(dir .. "/state")
    assert.is_true(#files >= 2, #files .. " images")
    local newest = dir .. "/state/" .. files[#files].name
    local img = proc.read_file(newest)
    local mid = math.floor(#img / 2)
    local flipped = img:sub(1, mid - 1)
      .. string.char(255 - img:byte(mid), 255 - img:byte(mid + 1), 255 - img:byte(mid + 2))
      .. img:sub(mid + 3)
    proc.write_file(newest, flipped)
    local s = run_and_term({}, 3)
    assert.is_truthy(s:match("torn or corrupt"), "no log line about the corrupt image; stderr:\n" .. proc.tail(s))
    assert.is_truthy(s:match("falling back to checkpoint " .. files[#files - 1].id), proc.tail(s))
    assert.is_truthy(s:match("restoring checkpoint " .. files[#files - 1].id), proc.tail(s))
    -- now truncate the newest image (a torn write)
    files = ckpt_files(dir .. "/state")
    newest = dir .. "/state/" .. files[#files].name
    img = proc.read_file(newest)
    proc.write_file(newest, img:sub(1, math.floor(#img * 2 / 3)))
    local code, s3 = run({}, 60)
    assert.are.equal(0, code, "run after truncation; stderr:\n" .. proc.tail(s3))
    assert.is_truthy(s3:match("torn or corrupt"), proc.tail(s3))
    assert.is_truthy(s3:match("restoring checkpoint " .. files[#files - 1].id), proc.tail(s3))
    local d = diff(out_sorted(), expected(12000, 50))
    assert.is_nil(d, d)
  end)

  it("--restore none starts empty, --restore ID restores that id, a finished pipeline has nothing left to run", function()
    conf({ count = 8000, rate = 4000, keys = 50, keep = 5 })
    run_and_term({}, 3)
    local files = ckpt_files(dir .. "/state")
    assert.is_true(#files >= 2, #files .. " images")
    local old = files[1].id
    -- --restore ID: the oldest kept image
    local code, s = run({ "--restore", tostring(old) }, 60)
    assert.are.equal(0, code, "--restore " .. old .. "; stderr:\n" .. proc.tail(s))
    assert.is_truthy(s:match("restoring checkpoint " .. old .. "[^%d]"), proc.tail(s))
    local want = expected(8000, 50)
    local d = diff(out_sorted(), want)
    assert.is_nil(d, d)
    -- finished: nothing left to run, exit 0, the output untouched
    local before = proc.read_file(dir .. "/out.txt")
    code, s = run({}, 30)
    assert.are.equal(0, code, "restart of a finished pipeline; stderr:\n" .. proc.tail(s))
    assert.is_truthy(s:match("nothing left to run"), proc.tail(s))
    assert.are.equal(before, proc.read_file(dir .. "/out.txt"))
    -- --restore none: runs the whole input again from empty state; the
    -- output is rewritten, each update once
    code, s = run({ "--restore", "none" }, 60)
    assert.are.equal(0, code, "--restore none; stderr:\n" .. proc.tail(s))
    assert.is_truthy(s:match("starting empty"), proc.tail(s))
    assert.is_falsy(s:match("restoring checkpoint"), proc.tail(s))
    d = diff(out_sorted(), want)
    assert.is_nil(d, d)
    -- a bad --restore value is refused
    code, s = run({ "--restore", "soon" }, 30)
    assert.are.equal(1, code, proc.tail(s))
    assert.is_truthy(s:match("%-%-restore"), proc.tail(s))
    -- an id that is not stored: an error, the output untouched
    before = proc.read_file(dir .. "/out.txt")
    code, s = run({ "--restore", "999999" }, 30)
    assert.are_not.equal(0, code, "--restore of a missing id exited 0; stderr:\n" .. proc.tail(s))
    assert.are.equal(before, proc.read_file(dir .. "/out.txt"))
  end)

  it("pending timers are in the snapshot: set before a SIGTERM, they fire after the restore, once", function()
    -- each key sets one timer 2 s after its first record; the first run is
    -- stopped before any is due, the second fires all 50
    proc.write_file(dir .. "/timers.lua", [[
local op = {}
function op.process(ctx, v)
  local st = ctx.state
  if not st.set then
    st.set = true
    ctx:timer(ctx.time + 2000)
  end
end
function op.timer(ctx, t) ctx:emit("fired " .. ctx.key) end
return op
]])
    proc.write_file(dir .. "/p.conf", [[
pipeline "tm" { workers = 2, checkpoint = { every = "100ms", store = "file://state" } }
source   "gen"   { kind = "generator", rate = 200 }
operator "key"   { script = "key.lua", from = "gen", parallelism = 2, params = { keys = 50 } }
operator "tm"    { script = "timers.lua", from = "key", grouping = "key", parallelism = 2 }
sink     "out"   { kind = "file", path = "out.txt", from = "tm" }
]])
    local pid, err = start()
    proc.sleep(1.0)
    proc.kill(pid, "TERM")
    assert.are.equal(0, proc.wait(pid, 15), proc.tail(proc.read_file(err)))
    assert.are.same({}, proc.file_lines(dir .. "/out.txt"), "a timer fired in the first second")
    pid, err = start()
    local all = proc.wait_for(function()
      return #proc.file_lines(dir .. "/out.txt") >= 50 or not proc.alive(pid)
    end, 10, 0.05)
    proc.sleep(0.3) -- a duplicate would show up by now
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 15)
    local s = proc.read_file(err) or ""
    assert.are.equal(0, code, proc.tail(s))
    assert.is_truthy(s:match("restoring checkpoint"), proc.tail(s))
    local want = {}
    for i = 0, 49 do want[#want + 1] = "fired k" .. i end
    local d = diff(out_sorted(), proc.sorted(want))
    assert.is_nil(d, (all and "" or "(waited 10 s) ") .. tostring(d))
  end)

  it("check refuses exactly_once with a tcp source or a stdout sink (FILE:LINE, the guarantee it can give)", function()
    local f = proc.write_file(dir .. "/tcp.conf", [[
pipeline "t" {
  workers = 1,
  guarantee = "exactly_once",
  checkpoint = { every = "1s" },
}
source "net" { kind = "tcp", listen = "127.0.0.1:0" }
sink   "out" { kind = "file", path = "out.txt", from = "net" }
]])
    local code, out, err = proc.run({ proc.bin(), "check", f }, 10)
    local text = out .. err
    assert.are.equal(1, code, text)
    local line = text:match(proc.pesc(f) .. ":(%d+): [^\n]*") and
      text:match(proc.pesc(f) .. ":(%d+): [^\n]*exactly_once")
    assert.are.equal("3", line, "expected " .. f .. ":3: ...exactly_once...; got:\n" .. text)
    local msg = text:match(proc.pesc(f) .. ":3: ([^\n]*)")
    assert.is_truthy(msg:match("net") and msg:match("tcp") and msg:match("at_most_once"), msg)
    -- a stdout sink cannot commit
    f = proc.write_file(dir .. "/stdout.conf", [[
pipeline "t" {
  guarantee = "exactly_once",
  checkpoint = { every = "1s" },
}
source "gen" { kind = "generator", count = 3 }
sink   "out" { kind = "stdout", from = "gen" }
]])
    code, out, err = proc.run({ proc.bin(), "check", f }, 10)
    text = out .. err
    assert.are.equal(1, code, text)
    msg = text:match(proc.pesc(f) .. ":2: ([^\n]*)")
    assert.is_truthy(msg and msg:match("stdout") and msg:match("at_least_once"), text)
    -- the same pipeline with a file sink and no guarantee: exactly_once by default
    local ok = proc.write_file(dir .. "/ok.conf", [[
pipeline "t" { workers = 1, checkpoint = { every = "50ms" } }
source "gen" { kind = "generator", count = 100 }
sink   "out" { kind = "file", path = "out.txt", from = "gen" }
]])
    code, out, err = proc.run({ proc.bin(), "check", ok }, 10)
    assert.are.equal(0, code, out .. err)
    code, out, err = proc.run({ proc.bin(), "run", ok }, 30)
    assert.are.equal(0, code, err)
    assert.is_truthy(err:match("guarantee exactly_once"), err)
    assert.is_truthy(proc.exists(dir .. "/state/t/latest"), "no state/t/latest beside the conf")
    -- another pipeline pointed at the same store is refused, and so is a
    -- restore with another max_parallelism
    proc.write_file(dir .. "/other.conf", [[
pipeline "u" { workers = 1, checkpoint = { every = "50ms", store = "file://state/t" } }
source "gen" { kind = "generator", count = 100 }
sink   "out" { kind = "file", path = "out2.txt", from = "gen" }
]])
    code, out, err = proc.run({ proc.bin(), "run", dir .. "/other.conf" }, 30)
    assert.are.equal(1, code, err)
    assert.is_truthy(err:match("belongs to pipeline 't', not 'u'"), err)
    proc.write_file(dir .. "/maxp.conf", [[
pipeline "t" { workers = 1, max_parallelism = 16, checkpoint = { every = "50ms" } }
source "gen" { kind = "generator", count = 100 }
sink   "out" { kind = "file", path = "out.txt", from = "gen" }
]])
    code, out, err = proc.run({ proc.bin(), "run", dir .. "/maxp.conf" }, 30)
    assert.are.equal(1, code, err)
    assert.is_truthy(err:match("max_parallelism 128"), err)
  end)
end)
