-- End to end: Redis (docs/redis.md). Every test starts its OWN redis-server
-- (support.resp: a free loopback port, appendonly yes in the test's temp
-- dir, so a Redis restart keeps the data) and kills it by PID afterwards.
--
--   * exactly_once: a Redis Stream of 200,000 words -> pair (v, v) -> count
--     x2 (key grouping) -> HSET counts, checkpoints every 200 ms into
--     redis:// on the same server. The stream is fed in batches while the
--     pipeline runs; sluice is SIGKILLed twice at random instants (and
--     restarted each time) and redis-server is restarted once under it.
--     HGETALL counts must equal the exact counts.
--   * at_least_once into XADD: a SIGKILL mid-stream loses no word.
--   * the redis:// store restores with another parallelism (count x2 ->
--     x4, 2 -> 3 workers): exact totals.
--   * XACK after the checkpoint: after a SIGTERM nothing read is left in
--     the group's pending entries list, and no staged list is left.
--   * an unreachable redis:// store at start: retried with a WARN line,
--     then exit 5 after checkpoint.connect_timeout.
--
-- The random instants come from math.randomseed(SEED): SEED is printed, and
-- SLUICE_SEED=N replays a run's kill instants.
local proc = require("support.proc")
local resp = require("support.resp")

local SEED = tonumber(os.getenv("SLUICE_SEED") or "") or 20261124
print("redis_spec: seed " .. SEED .. " (SLUICE_SEED=" .. SEED .. " to replay)")
math.randomseed(SEED)

local PAIR = [[
local op = {}
function op.process(ctx, v) ctx:emit(v, v) end
return op
]]

-- the key's running count, keyed by the word: HSET counts WORD N
local COUNT = [[
local op = {}
function op.process(ctx, v)
  local st = ctx.state
  st.n = (st.n or 0) + 1
  ctx:emit(tostring(st.n), ctx.key)
end
return op
]]

local PASS = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
return op
]]

-- n words from ~1000 distinct ones, deterministic (an LCG), and their counts.
local function words(n, seed)
  local t, counts = {}, {}
  local x = seed or 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local w = "w" .. (math.floor(x / 65536) % 1000)
    t[i] = w
    counts[w] = (counts[w] or 0) + 1
  end
  return t, counts
end

-- XADDs list[from..to] as field v (pipelined).
local function xadd(r, stream, list, from, to)
  local cmds = {}
  for i = from, to do cmds[#cmds + 1] = { "XADD", stream, "*", "v", list[i] } end
  local replies = assert(r:pipeline(cmds))
  for _, id in ipairs(replies) do
    assert(type(id) == "string", "XADD failed: " .. tostring(type(id) == "table" and id.err or id))
  end
end

-- nil when the hash equals the counts, else a short description.
local function hash_diff(h, counts)
  local wrong, n = {}, 0
  for w, c in pairs(counts) do
    if tonumber(h[w]) ~= c then
      n = n + 1
      if #wrong < 8 then wrong[#wrong + 1] = string.format("%s=%s (want %d)", w, tostring(h[w]), c) end
    end
  end
  for w, v in pairs(h) do
    if not counts[w] then
      n = n + 1
      if #wrong < 8 then wrong[#wrong + 1] = string.format("%s=%s (unexpected)", w, v) end
    end
  end
  if n == 0 then return nil end
  return n .. " fields differ: " .. table.concat(wrong, ", ")
end

describe("e2e redis", function()
  local dir, srv, r, runs

  before_each(function()
    dir = proc.tmpdir()
    runs = 0
    proc.write_tree(dir, { ["pair.lua"] = PAIR, ["count.lua"] = COUNT, ["pass.lua"] = PASS })
  end)

  after_each(function()
    if r then pcall(r.close, r) end
    r = nil
    proc.reap_all()        -- sluice and redis-server, by PID
    srv = nil
    proc.rm_rf(dir)
  end)

  local function start_redis()
    srv = resp.server(dir .. "/redis")
    r = assert(resp.connect(srv.port))
  end

  -- (re)connects the test's own client after a Redis restart
  local function client()
    local ok = r and r:call("PING")
    if ok ~= "PONG" then
      if r then pcall(r.close, r) end
      r = assert(resp.connect(srv.port, 10))
    end
    return r
  end

  -- pipeline "NAME": redis source (stream) -> pair -> count xP -> hset KEY.
  local function count_conf(o)
    return proc.write_file(dir .. "/p.conf", string.format([[
pipeline "%s" {
  workers = %d,
  guarantee = "exactly_once",
  checkpoint = { every = "200ms", store = "%s", keep = 3 },
}
source   "in"    { kind = "redis", url = "%s", stream = "%s", start = "first" }
operator "pair"  { script = "pair.lua", from = "in" }
operator "count" { script = "count.lua", from = "pair", grouping = "key", parallelism = %d }
sink     "out"   { kind = "redis", url = "%s", command = "hset", key = "%s", from = "count" }
]], o.name or "rc", o.workers or 2, srv:url(0, o.prefix or "ck"), srv:url(0), o.stream or "words",
      o.p or 2, srv:url(0), o.key or "counts"))
  end

  local function start(flags)
    runs = runs + 1
    local err = dir .. "/stderr-" .. runs
    local pid = proc.start_sluice(dir .. "/p.conf", flags,
      { stderr = err, stdout = dir .. "/stdout-" .. runs })
    return pid, err
  end

  local function logs()
    local t = {}
    for i = 1, runs do
      t[#t + 1] = "--- run " .. i .. ":\n" .. proc.tail(proc.read_file(dir .. "/stderr-" .. i) or "", 1500)
    end
    return table.concat(t, "\n")
  end

  -- Waits (timeout s) until the hash equals counts; nil or the last diff.
  local function wait_hash(key, counts, timeout, pid)
    local last
    local ok = proc.wait_for(function()
      local h, e = client():hgetall(key)
      if h then last = hash_diff(h, counts) else last = "HGETALL failed: " .. tostring(e) end
      if not last then return true end
      if pid and not proc.alive(pid) then return true end
    end, timeout, 0.1)
    return last, ok
  end

  it("exactly_once: 200k entries, 2 SIGKILLs and a redis-server restart mid-run: HGETALL = exact counts", function()
    start_redis()
    local N, BATCHES = 200000, 20
    local list, counts = words(N)
    local per = N / BATCHES
    count_conf({})
    xadd(r, "words", list, 1, per)               -- batch 1 before the start
    local pid, err = start()
    -- events: SIGKILL at batch k1, redis restart at rb, SIGKILL at k2; each
    -- at a random instant after that batch
    local k1 = math.random(3, 6)
    local rb = math.random(8, 11)
    local k2 = math.random(13, 16)
    local log = {}
    local function kill_and_restart(b)
      proc.sleep(math.random() * 0.25)
      local was_alive = proc.alive(pid)
      proc.kill(pid, "KILL")
      local code = proc.wait(pid, 5)
      assert.is_true(was_alive, "sluice had ended before the kill at batch " .. b .. " (" .. tostring(code)
        .. "); stderr:\n" .. proc.tail(proc.read_file(err)))
      assert.are.equal("signal 9", code)
      local s = proc.read_file(err) or ""
      local done = 0
      for _ in s:gmatch("checkpoint: %d+ completed") do done = done + 1 end
      log[#log + 1] = string.format("run %d killed after batch %d (%d checkpoints, restored %s)", runs, b, done,
        s:match("restoring checkpoint (%d+)") or "none")
      pid, err = start()
    end
    for b = 2, BATCHES do
      proc.sleep(0.15 + math.random() * 0.1)
      xadd(client(), "words", list, (b - 1) * per + 1, b * per)
      if b == k1 or b == k2 then kill_and_restart(b) end
      if b == rb then
        proc.sleep(math.random() * 0.25)
        assert.is_true(proc.alive(pid), "sluice ended before the redis restart; stderr:\n"
          .. proc.tail(proc.read_file(err)))
        local t0 = proc.now()
        local rc = srv:stop()
        proc.sleep(0.3)
        srv:start()
        log[#log + 1] = string.format("redis-server restarted after batch %d (exit %s, down %.2f s)", b,
          tostring(rc), proc.now() - t0)
        assert.are.equal(0, rc, "redis-server's exit on SIGTERM")
      end
    end
    print("redis_spec: " .. table.concat(log, "; "))
    local d = wait_hash("counts", counts, 60, pid)
    assert.is_nil(d, tostring(d) .. "\n" .. logs())
    assert.is_true(proc.alive(pid), logs())
    -- the last run restored a checkpoint from the redis store
    assert.is_truthy((proc.read_file(err) or ""):match("restoring checkpoint %d+"), logs())
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 20)
    assert.are.equal(0, code, "exit after SIGTERM; " .. logs())
    assert.is_nil(hash_diff(client():hgetall("counts"), counts), "the hash changed after the stop")
    -- the final checkpoint applied every staged list
    assert.are.equal(0, client():call("SCARD", "sluice:rc:out:lists"), "staged lists left after the stop")
    -- the store: latest names a stored image
    local latest = client():call("GET", "ck:latest")
    assert.is_truthy(latest and tonumber(latest), "ck:latest = " .. tostring(latest))
    assert.is_truthy(client():call("EXISTS", "ck:chk:" .. latest) == 1, "ck:chk:" .. tostring(latest) .. " missing")
  end)

  it("at_least_once into XADD: a SIGKILL mid-stream loses no entry", function()
    start_redis()
    local N, BATCHES = 30000, 6
    local per = N / BATCHES
    local list = {}
    for i = 1, N do list[i] = "u" .. i end
    proc.write_file(dir .. "/p.conf", string.format([[
pipeline "al" {
  workers = 2,
  guarantee = "at_least_once",
  checkpoint = { every = "200ms", store = "%s" },
}
source   "in"   { kind = "redis", url = "%s", stream = "in", start = "first" }
operator "pass" { script = "pass.lua", from = "in", parallelism = 2 }
sink     "out"  { kind = "redis", url = "%s", command = "xadd", key = "out", from = "pass" }
]], srv:url(0, "al"), srv:url(0), srv:url(0)))
    xadd(r, "in", list, 1, per)
    local pid, err = start()
    local kb = math.random(2, 4)
    for b = 2, BATCHES do
      proc.sleep(0.2 + math.random() * 0.1)
      xadd(r, "in", list, (b - 1) * per + 1, b * per)
      if b == kb then
        proc.sleep(math.random() * 0.2)
        assert.is_true(proc.alive(pid), proc.tail(proc.read_file(err)))
        proc.kill(pid, "KILL")
        assert.are.equal("signal 9", proc.wait(pid, 5))
        pid, err = start()
      end
    end
    local missing
    proc.wait_for(function()
      if (r:call("XLEN", "out") or 0) < N then return false end
      local seen = {}
      for _, e in ipairs(assert(r:xrange_all("out"))) do
        local f = e[2]
        for i = 1, #f, 2 do if f[i] == "v" then seen[f[i + 1]] = true end end
      end
      missing = {}
      for i = 1, N do if not seen[list[i]] then missing[#missing + 1] = list[i] end end
      return #missing == 0
    end, 30, 0.2)
    local xlen = r:call("XLEN", "out")
    assert.is_truthy(missing, "the output stream holds " .. tostring(xlen) .. " entries, expected >= " .. N
      .. "\n" .. logs())
    assert.are.equal(0, #missing, #missing .. " entries lost, e.g. "
      .. table.concat(missing, ", ", 1, math.min(8, #missing)) .. "\n" .. logs())
    print(string.format("redis_spec: at_least_once: %d entries in, %d out (%d duplicates)", N, xlen, xlen - N))
    assert.is_truthy((proc.read_file(err) or ""):match("guarantee at_least_once"), logs())
    proc.kill(pid, "TERM")
    assert.are.equal(0, proc.wait(pid, 20), logs())
  end)

  it("the redis:// store restores with another parallelism: count x2 on 2 workers, then x4 on 3: exact totals", function()
    start_redis()
    local N = 40000
    local list, counts = words(N, 777)
    local half = {}
    for i = 1, N / 2 do half[list[i]] = (half[list[i]] or 0) + 1 end
    count_conf({ name = "rs", p = 2, workers = 2, prefix = "rs", stream = "rs", key = "rcounts" })
    xadd(r, "rs", list, 1, N / 2)
    local pid = start()
    local d = wait_hash("rcounts", half, 30, pid)
    assert.is_nil(d, "first half: " .. tostring(d) .. "\n" .. logs())
    proc.sleep(0.5) -- a checkpoint or two after the last commit
    proc.kill(pid, "TERM")
    assert.are.equal(0, proc.wait(pid, 20), logs())
    -- the second half, read by x4 counts that must continue from the restored state
    xadd(r, "rs", list, N / 2 + 1, N)
    count_conf({ name = "rs", p = 4, workers = 3, prefix = "rs", stream = "rs", key = "rcounts" })
    local err
    pid, err = start()
    d = wait_hash("rcounts", counts, 30, pid)
    assert.is_nil(d, "after the rescale: " .. tostring(d) .. "\n" .. logs())
    local s = proc.read_file(err) or ""
    assert.is_truthy(s:match("restoring checkpoint %d+"), logs())
    assert.is_truthy(s:match("operator 'count' x4"), logs())
    proc.kill(pid, "TERM")
    assert.are.equal(0, proc.wait(pid, 20), logs())
  end)

  it("XACK after the checkpoint: after a SIGTERM no consumed entry is left pending, no staged list left", function()
    start_redis()
    local list, counts = words(6000, 99)
    count_conf({ name = "ack", prefix = "ack", stream = "acks", key = "acounts" })
    xadd(r, "acks", list, 1, 3000)
    local pid = start()
    local half = {}
    for i = 1, 3000 do half[list[i]] = (half[list[i]] or 0) + 1 end
    assert.is_nil(wait_hash("acounts", half, 30, pid), logs())
    xadd(r, "acks", list, 3001, 6000)
    assert.is_nil(wait_hash("acounts", counts, 30, pid), logs())
    proc.sleep(0.5) -- two more checkpoints, whose commits acknowledge
    local before = r:call("XPENDING", "acks", "ack")[1]
    proc.kill(pid, "TERM")
    assert.are.equal(0, proc.wait(pid, 20), logs())
    local after = r:call("XPENDING", "acks", "ack")[1]
    assert.are.equal(0, after, string.format("entries pending in group 'ack' (XPENDING acks ack): %d while running "
      .. "(0.5 s after the counts were complete), %d after the SIGTERM exit", before, after))
    assert.are.equal(0, r:call("SCARD", "sluice:ack:out:lists"))
  end)

  it("an unreachable redis:// store at start: a retry line, then exit 5 after connect_timeout", function()
    local port = proc.free_port() -- nothing listens there
    proc.write_file(dir .. "/p.conf", string.format([[
pipeline "down" {
  guarantee = "exactly_once",
  checkpoint = { every = "200ms", store = "redis://127.0.0.1:%d/0?prefix=x", connect_timeout = "1s" },
}
source "gen" { kind = "generator", count = 10 }
sink   "out" { kind = "file", path = "out.txt", from = "gen" }
]], port))
    local t0 = proc.now()
    local code, _, err = proc.run_sluice(dir .. "/p.conf", {}, 20)
    local dt = proc.now() - t0
    assert.are.equal(5, code, "exit code; stderr:\n" .. proc.tail(err))
    assert.is_truthy(err:match("WARN[^\n]*127%.0%.0%.1:" .. port .. "[^\n]*retrying in %d+ ms"),
      "no retry line naming the address; stderr:\n" .. proc.tail(err))
    assert.is_truthy(err:match("ERROR[^\n]*connect_timeout"), proc.tail(err))
    assert.is_true(dt < 8, string.format("took %.1f s with connect_timeout = 1s", dt))
  end)

  it("an unreachable redis source and sink at start: retries, then exit 5 after their connect_timeout", function()
    local port = proc.free_port() -- nothing listens there
    for _, text in ipairs({
      string.format([[
source "in" { kind = "redis", url = "redis://127.0.0.1:%d/0", stream = "s", connect_timeout = "1s" }
sink   "out" { kind = "stdout", from = "in" }
]], port),
      string.format([[
pipeline "p" { guarantee = "at_least_once" }
source "gen" { kind = "generator", count = 10 }
sink   "out" { kind = "redis", url = "redis://127.0.0.1:%d/0", command = "set", key = "k",
               from = "gen", connect_timeout = "1s" }
]], port),
    }) do
      proc.write_file(dir .. "/p.conf", text)
      local t0 = proc.now()
      local code, _, err = proc.run_sluice(dir .. "/p.conf", {}, 20)
      assert.are.equal(5, code, "exit code; stderr:\n" .. proc.tail(err))
      assert.is_truthy(err:match("WARN[^\n]*127%.0%.0%.1:" .. port), proc.tail(err))
      assert.is_true(proc.now() - t0 < 8, proc.tail(err))
    end
  end)
end)
