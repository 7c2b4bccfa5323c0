-- End to end: what the admin API shows of a running pipeline beyond its
-- counts (docs/operations.md; issue 6 item 1): source lag while
-- back-pressure holds the sources (file bytes, a bounded generator's rest,
-- a Redis Stream group's lag against Redis's own XINFO), the script
-- versions and last errors of GET /status, and conf reloads counted across
-- the restarts they cause.
local proc = require("support.proc")
local resp = require("support.resp")
local http = require("support.http")
local socket = require("socket")

local PASS = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
return op
]]

-- Starts the conf in dir and waits for the admin port.
local function start(dir, port)
  local pid = proc.start_sluice(dir .. "/p.conf")
  local ok = proc.wait_for(function()
    if not proc.alive(pid) then return "dead" end
    return (http.get(port, "/health", { timeout = 1 })) == 200
  end, 15, 0.1)
  assert(ok == 1 or ok == true, "did not come up: " ..
    proc.tail(proc.read_file(dir .. "/stderr")))
  return pid
end

-- Waits until fn(samples) is true; returns the samples it was true for.
local function metrics_until(port, fn, timeout, what)
  local last
  local ok = proc.wait_for(function()
    last = http.metrics(port)
    return fn(last)
  end, timeout or 15, 0.1)
  assert(ok, what or "metrics condition not reached")
  return last
end

describe("e2e observe", function()
  local dir, pid, socks

  before_each(function()
    dir = proc.tmpdir()
    socks = {}
  end)

  after_each(function()
    if pid and proc.alive(pid) then proc.stop(pid, "KILL", 2) end
    for _, s in ipairs(socks) do pcall(s.close, s) end
    proc.reap_all()
    proc.rm_rf(dir)
    pid = nil
  end)

  -- a tcp server that accepts the sink's connection and never reads
  local function stuck_sink()
    local server = assert(socket.bind("127.0.0.1", 0))
    socks[#socks + 1] = server
    local _, p = server:getsockname()
    return server, p
  end

  it("source lag: a file's unread bytes and a generator's rest, while a stuck sink holds them", function()
    local _, sink_port = stuck_sink()
    local port = proc.free_port()
    local line = ("x"):rep(99) .. "\n"
    local size = 40 * 1000 * 1000
    proc.write_file(dir .. "/in.txt", line:rep(size / 100))
    proc.write_tree(dir, {
      ["pass.lua"] = PASS,
      ["p.conf"] = ([[
pipeline "lag" { workers = 1, admin = %d }
source   "file" { kind = "file", path = "in.txt" }
source   "gen"  { kind = "generator", count = 50000000 }
operator "pass" { script = "pass.lua", from = { "file", "gen" } }
sink     "out"  { kind = "tcp", connect = "127.0.0.1:%d", from = "pass" }
]]):format(port, sink_port),
    })
    pid = start(dir, port)
    -- once the sink's socket buffers and the rings are full, nothing moves
    local prev
    local s = metrics_until(port, function(m)
      local off = http.metric(m, "sluice_source_offset", 'source="file"')
      local g = http.metric(m, "sluice_source_offset", 'source="gen"')
      local still = prev and prev[1] == off and prev[2] == g
      prev = { off, g }
      return still and off > 0
    end, 30, "the sources did not stall")
    local off = http.metric(s, "sluice_source_offset", 'source="file"')
    local lag = http.metric(s, "sluice_source_lag_bytes", 'source="file"')
    assert.is_true(lag > 0, "no lag while stalled")
    assert.are.equal(size, off + lag)
    local next_rec = http.metric(s, "sluice_source_offset", 'source="gen"')
    local rest = http.metric(s, "sluice_source_lag_records", 'source="gen"')
    assert.are.equal(50000000, (next_rec - 1) + rest)
    assert.is_true(rest > 0)
    -- tcp and stdin sources have no lag; the file has none in records
    assert.is_nil(http.metric(s, "sluice_source_lag_records", 'source="file"'))
    assert.is_nil(http.metric(s, "sluice_source_lag_bytes", 'source="gen"'))
  end)

  it("source lag: a Redis Stream group's lag is Redis's own", function()
    local srv = resp.server(dir .. "/redis")
    local r = assert(resp.connect(srv.port))
    local cmds = {}
    for i = 1, 200000 do cmds[#cmds + 1] = { "XADD", "in", "*", "v", ("e%06d"):format(i) .. ("y"):rep(90) } end
    assert(r:pipeline(cmds))
    local _, sink_port = stuck_sink()
    local port = proc.free_port()
    proc.write_tree(dir, {
      ["pass.lua"] = PASS,
      ["p.conf"] = ([[
pipeline "rlag" { workers = 1, admin = %d }
source   "s"    { kind = "redis", url = "redis://127.0.0.1:%d", stream = "in",
                  group = "g", start = "first" }
operator "pass" { script = "pass.lua", from = "s" }
sink     "out"  { kind = "tcp", connect = "127.0.0.1:%d", from = "pass" }
]]):format(port, srv.port, sink_port),
    })
    pid = start(dir, port)
    local function redis_lag()
      for _, g in ipairs(assert(r:call("XINFO", "GROUPS", "in"))) do
        local m = {}
        for i = 1, #g, 2 do m[g[i]] = g[i + 1] end
        if m.name == "g" then return m.lag end
      end
    end
    local got, want
    local ok = proc.wait_for(function()
      local m = http.metrics(port)
      got = http.metric(m, "sluice_source_lag_records", 'source="s"')
      want = redis_lag()
      return got ~= nil and got == want and got > 0
    end, 30, 0.3)
    assert.truthy(ok, ("lag %s, redis says %s"):format(tostring(got), tostring(want)))
    srv:stop()
  end)

  it("GET /status: script versions, the last failed reload, the last errors", function()
    local port = proc.free_port()
    local V1 = [[
local op = {}
function op.process(ctx, v)
  if tonumber(v) % 100 == 0 then error("bad record " .. v) end
  ctx:emit(v)
end
return op
]]
    -- the generator ends; the followed file keeps the run alive
    proc.write_tree(dir, {
      ["op.lua"] = V1,
      ["hold.txt"] = "",
      ["p.conf"] = ([[
pipeline "st" { workers = 1, admin = %d }
source   "g"    { kind = "generator", count = 1000 }
source   "hold" { kind = "file", path = "hold.txt", follow = true }
operator "op"   { script = "op.lua", from = { "g", "hold" } }
sink     "out"  { kind = "file", path = "out.txt", from = "op" }
]]):format(port),
    })
    pid = start(dir, port)
    local function status()
      local code, body = http.get(port, "/status")
      assert.are.equal(200, code, body)
      return body
    end
    -- ten records failed: counted, and the last of them listed
    local body
    assert.truthy(proc.wait_for(function()
      body = status()
      return body:find('"msg":"error: [^"]*bad record 1000') ~= nil
    end, 10, 0.1), body)
    local v1_hash = body:match('"scripts":%[{"path":"[^"]*op%.lua","version":1,"hash":"(%x+)","since_ms":%d+,"last_error":null}%]')
    assert.truthy(v1_hash, body)
    assert.is_true(tonumber(body:match('"errors":{"warn":%d+,"error":(%d+)')) >= 10, body)
    assert.truthy(body:find('"component":"operator op[0]","msg":"error: ', 1, true), body)
    -- a broken save: the old version keeps running, its error is shown
    proc.write_file(dir .. "/op.tmp", "local op = {\n")
    os.rename(dir .. "/op.tmp", dir .. "/op.lua")
    assert.truthy(proc.wait_for(function()
      body = status()
      return body:find('"last_error":{"time_ms":%d+,"error":"[^"]*op%.lua:2:') ~= nil
    end, 10, 0.1), body)
    assert.truthy(body:find('"version":1,"hash":"' .. v1_hash .. '"', 1, true), body)
    assert.truthy(body:find('"reloads":{"ok":0,"failed":1,', 1, true), body)
    -- a good save: version 2, another hash
    proc.write_file(dir .. "/op.tmp", PASS)
    os.rename(dir .. "/op.tmp", dir .. "/op.lua")
    assert.truthy(proc.wait_for(function()
      body = status()
      return body:find('"version":2,', 1, true) ~= nil
    end, 10, 0.1), body)
    local v2_hash = body:match('"version":2,"hash":"(%x+)"')
    assert.truthy(v2_hash and v2_hash ~= v1_hash, body)
    local m = http.metrics(port)
    assert.are.equal(1, http.metric(m, "sluice_reloads_total", 'result="ok"'))
    assert.are.equal(1, http.metric(m, "sluice_reloads_total", 'result="failed"'))
    assert.is_true(http.metric(m, "sluice_log_events_total", 'level="error"') >= 11)
    assert.are.equal(10, http.metric(m, "sluice_operator_errors_total", 'operator="op"'))
  end)

  it("an exactly_once redis sink with Redis away for 3 s: the API stays up, nothing lost or doubled", function()
    local srv = resp.server(dir .. "/redis")
    local port = proc.free_port()
    local N = 30000
    proc.write_tree(dir, {
      ["pass.lua"] = PASS,
      ["p.conf"] = ([[
pipeline "eo" {
  workers = 1, admin = %d, guarantee = "exactly_once",
  checkpoint = { every = "300ms", store = "file://state" },
}
source   "g"    { kind = "generator", count = %d, rate = 6000 }
operator "pass" { script = "pass.lua", from = "g" }
sink     "out"  { kind = "redis", url = "redis://127.0.0.1:%d", command = "xadd",
                  key = "out", from = "pass" }
]]):format(port, N, srv.port),
    })
    pid = start(dir, port)
    proc.sleep(1)
    assert.are.equal(0, srv:stop())
    -- Redis is away: the I/O thread does not block on it
    local t_end, worst, answers = proc.now() + 3, 0, 0
    while proc.now() < t_end do
      local t0 = proc.now()
      local status = http.get(port, "/health", { timeout = 2 })
      assert.are.equal(200, status)
      worst = math.max(worst, proc.now() - t0)
      answers = answers + 1
      proc.sleep(0.2)
    end
    assert.is_true(worst < 0.5, ("/health took %.2f s"):format(worst))
    srv:start()
    assert.are.equal(0, proc.wait(pid, 60), proc.tail(proc.read_file(dir .. "/stderr")))
    local r = assert(resp.connect(srv.port))
    assert.are.equal(N, r:call("XLEN", "out"))
    local seen, n = {}, 0
    for _, e in ipairs(r:call("XRANGE", "out", "-", "+")) do
      local v = e[2][2]
      assert.is_nil(seen[v], "twice: " .. v)
      seen[v], n = true, n + 1
    end
    assert.are.equal(N, n)
    assert.truthy((proc.read_file(dir .. "/stderr")):find("cannot reach redis", 1, true))
    print(("observe_spec: %d /health answers while Redis was away, the slowest %.0f ms"):format(answers, worst * 1000))
    srv:stop()
  end)

  it("an exactly_once redis sink waits for Redis at start: 503 restoring, then it runs", function()
    local srv = resp.server(dir .. "/redis")
    assert.are.equal(0, srv:stop())
    local port = proc.free_port()
    proc.write_tree(dir, {
      ["pass.lua"] = PASS,
      ["p.conf"] = ([[
pipeline "eo2" {
  workers = 1, admin = %d, guarantee = "exactly_once",
  checkpoint = { every = "300ms", store = "file://state" },
}
source   "g"    { kind = "generator", count = 1000 }
operator "pass" { script = "pass.lua", from = "g" }
sink     "out"  { kind = "redis", url = "redis://127.0.0.1:%d", command = "xadd",
                  key = "out", from = "pass" }
]]):format(port, srv.port),
    })
    pid = proc.start_sluice(dir .. "/p.conf")
    local status, body
    assert.truthy(proc.wait_for(function()
      status, body = http.get(port, "/health", { timeout = 1 })
      return status ~= nil
    end, 5, 0.05), "the admin API did not answer while the sink waited")
    assert.are.equal(503, status)
    assert.are.equal("restoring\n", body)
    proc.sleep(1)
    assert.are.equal(503, (http.get(port, "/health", { timeout = 1 })))
    srv:start()
    assert.are.equal(0, proc.wait(pid, 30), proc.tail(proc.read_file(dir .. "/stderr")))
    local r = assert(resp.connect(srv.port))
    assert.are.equal(1000, r:call("XLEN", "out"))
    srv:stop()
  end)

  it("GET /health is 503 restoring while the checkpoint store is waited for", function()
    local port = proc.free_port()
    local dead = proc.free_port() -- nothing listens there
    proc.write_tree(dir, {
      ["pass.lua"] = PASS,
      ["p.conf"] = ([[
pipeline "rs" {
  workers = 1, admin = %d,
  checkpoint = { every = "1s", store = "redis://127.0.0.1:%d", connect_timeout = "3s" },
}
source   "g"    { kind = "generator", count = 10 }
operator "pass" { script = "pass.lua", from = "g" }
sink     "out"  { kind = "file", path = "out.txt", from = "pass" }
]]):format(port, dead),
    })
    pid = proc.start_sluice(dir .. "/p.conf")
    local status, body
    assert.truthy(proc.wait_for(function()
      status, body = http.get(port, "/health", { timeout = 1 })
      return status ~= nil
    end, 5, 0.05), "the admin API did not answer during the restore")
    assert.are.equal(503, status)
    assert.are.equal("restoring\n", body)
    local st, sbody = http.get(port, "/status")
    assert.are.equal(200, st)
    assert.truthy(sbody:find('"state":"restoring"', 1, true), sbody)
    assert.are.equal(200, (http.get(port, "/metrics")))
    assert.are.equal(503, (http.post(port, "/checkpoint")))
    -- then the store stays away: exit 5, as before
    assert.are.equal(5, proc.wait(pid, 15))
  end)

  it("conf reloads are counted across the restarts they cause", function()
    local port = proc.free_port()
    local function conf(p)
      return ([[
pipeline "cr" { workers = 1, admin = %d }
source   "hold" { kind = "file", path = "hold.txt", follow = true }
operator "pass" { script = "pass.lua", from = "hold", parallelism = %s }
sink     "out"  { kind = "file", path = "out.txt", from = "pass" }
]]):format(port, p)
    end
    local function save(text)
      proc.write_file(dir .. "/p.conf.tmp", text)
      assert(os.rename(dir .. "/p.conf.tmp", dir .. "/p.conf"))
    end
    proc.write_tree(dir, { ["pass.lua"] = PASS, ["hold.txt"] = "a\nb\n", ["p.conf"] = conf(1) })
    pid = start(dir, port)
    save(conf('"two"')) -- invalid: logged, the pipeline carries on
    metrics_until(port, function(m)
      return http.metric(m, "sluice_conf_reloads_total", 'result="failed"') == 1
    end, 10, "the invalid conf was not counted")
    save(conf(2)) -- valid: a savepoint, then a restart with two instances
    local m = metrics_until(port, function(s)
      return http.metric(s, "sluice_conf_reloads_total", 'result="ok"') == 1 and
        http.metric(s, "sluice_operator_records_in_total", 'operator="pass",instance="1"') ~= nil
    end, 20, "the valid conf was not applied and counted")
    assert.are.equal(1, http.metric(m, "sluice_conf_reloads_total", 'result="failed"'))
    local _, body = http.get(port, "/status")
    assert.truthy(body:find('"conf_ok":1,"conf_failed":1', 1, true), body)
  end)
end)
