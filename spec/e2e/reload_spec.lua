-- End to end: hot reload of operator scripts under a running server
-- (docs/reload.md; issue 5 items 1, 2, 4, 6).
local proc = require("support.proc")
local socket = require("socket")

-- Keys every record by its value (not reloaded).
local KEYBY = [[
local op = {}
function op.process(ctx, v) ctx:emit(v, v) end
return op
]]

local function counter(tag, extra)
  return ([[
local op = {}
%s
function op.process(ctx, v)
  local n = (ctx.state.n or 0) + 1
  ctx.state.n = n
  ctx:emit("%s " .. ctx.key .. " " .. n, ctx.key)
end
return op
]]):format(extra or "", tag)
end

local BROKEN = [[
local op = {}
function op.process(ctx, v)
  ctx:emit("v3 " .. ctx.key .. " " .. n,
end
return op
]]

describe("e2e hot reload of scripts", function()
  local dir, client

  before_each(function()
    dir = proc.tmpdir()
  end)

  after_each(function()
    if client then pcall(client.close, client) end
    client = nil
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function stderr_of() return proc.read_file(dir .. "/stderr") or "" end

  -- Replaces the script the way editors do: a temp file renamed over it.
  local function save(src)
    proc.write_file(dir .. "/.count.lua.tmp", src)
    assert(os.rename(dir .. "/.count.lua.tmp", dir .. "/count.lua"))
  end

  -- Output lines parsed: { tag=, key=, n= } in file order.
  local function records()
    local r = {}
    for _, l in ipairs(proc.file_lines(dir .. "/out.txt")) do
      local tag, key, n = l:match("^(%S+) (%S+) (%d+)$")
      assert(tag, "unexpected output line: " .. l)
      r[#r + 1] = { tag = tag, key = key, n = tonumber(n) }
    end
    return r
  end

  -- Per key: n runs 1, 2, 3, ... with no gap, no repeat; once a key has
  -- seen a tag in `order` it never goes back to an earlier one.
  local function assert_continuous(order)
    local rank = {}
    for i, t in ipairs(order) do rank[t] = i end
    local last, last_rank = {}, {}
    for _, r in ipairs(records()) do
      assert.is_not_nil(rank[r.tag], "unknown tag " .. r.tag)
      assert.are.equal((last[r.key] or 0) + 1, r.n,
        ("key %s: %d after %d (%s)"):format(r.key, r.n, last[r.key] or 0, r.tag))
      assert.is_true(rank[r.tag] >= (last_rank[r.key] or 1),
        ("key %s went back to %s"):format(r.key, r.tag))
      last[r.key], last_rank[r.key] = r.n, rank[r.tag]
    end
  end

  local function count_tag(tag)
    local n = 0
    for _, r in ipairs(records()) do if r.tag == tag then n = n + 1 end end
    return n
  end

  -- Waits until an output line carries `tag`; seconds it took, or nil.
  local function wait_tag(tag, timeout)
    local t0 = proc.now()
    local ok = proc.wait_for(function() return count_tag(tag) > 0 end, timeout or 5, 0.02)
    return ok and proc.now() - t0
  end

  -- A client that keeps sending "a", "b", "c", ... while `pump` is called.
  local sent = 0
  local KEYS = { "a", "b", "c", "d", "e" }
  local function pump_for(seconds)
    local deadline = proc.now() + seconds
    repeat
      local chunk = {}
      for _ = 1, 5 do
        sent = sent + 1
        chunk[#chunk + 1] = KEYS[(sent - 1) % #KEYS + 1]
      end
      assert(proc.send_all(client, table.concat(chunk, "\n") .. "\n"))
      socket.sleep(0.01)
    until proc.now() >= deadline
  end

  -- Sends while waiting for fn() to hold; returns its value or nil.
  local function send_until(fn, timeout)
    local deadline = proc.now() + timeout
    while proc.now() < deadline do
      pump_for(0.05)
      local v = fn()
      if v then return v end
    end
    return nil
  end

  local function start_tcp(env)
    local port = proc.free_port()
    proc.write_file(dir .. "/keyby.lua", KEYBY)
    proc.write_file(dir .. "/count.lua", counter("v1"))
    local conf = proc.write_file(dir .. "/p.conf", ([[
pipeline "reload" { workers = 2 }
source   "in"    { kind = "tcp", listen = "127.0.0.1:%d" }
operator "keyby" { script = "keyby.lua", from = "in" }
operator "count" { script = "count.lua", from = "keyby", grouping = "key", parallelism = 2 }
sink     "out"   { kind = "file", path = "out.txt", from = "count" }
]]):format(port))
    local pid = proc.start_sluice(conf, {}, { env = env })
    local c, err = proc.connect("127.0.0.1", port, 10, pid)
    assert.is_not_nil(c, err)
    client = c
    sent = 0
    return pid
  end

  local function switch_within(tag, limit)
    local t0 = proc.now()
    local ok = send_until(function() return count_tag(tag) > 0 end, 5)
    assert.is_truthy(ok, "no " .. tag .. " output within 5 s; stderr:\n" .. proc.tail(stderr_of()))
    local took = proc.now() - t0
    assert.is_true(took < limit, ("output switched to %s after %.2f s"):format(tag, took))
  end

  local function stop(pid)
    client:close()
    client = nil
    local code = proc.stop(pid, "TERM", 10)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr_of()))
  end

  it("a script replaced by rename switches v1 -> v2 within 2 s, counts continue; " ..
     "a broken save keeps v2 and logs FILE:LINE; a fixed save is picked up; SIGHUP reloads", function()
    local pid = start_tcp()
    assert.is_truthy(send_until(function() return count_tag("v1") >= 50 end, 10),
      "no v1 output; stderr:\n" .. proc.tail(stderr_of()))

    save(counter("v2"))
    switch_within("v2", 2)
    pump_for(0.3)
    assert_continuous({ "v1", "v2" })
    assert.matches("operator count%[0%] now runs [^\n]*count%.lua %(version 2%)", stderr_of())
    assert.matches("operator count%[1%] now runs [^\n]*count%.lua %(version 2%)", stderr_of())

    -- a broken save: FILE:LINE in the log, v2 keeps running
    save(BROKEN)
    assert.is_truthy(send_until(function()
      return stderr_of():match("count%.lua:4: [^\n]*version 2 keeps running")
    end, 5), "no FILE:LINE error for the broken save; stderr:\n" .. proc.tail(stderr_of()))
    assert.matches("ERROR", stderr_of())
    local v2_before = count_tag("v2")
    pump_for(0.5)
    assert.is_true(count_tag("v2") > v2_before, "v2 keeps running after a broken save")
    assert.are.equal(0, count_tag("v3"))
    assert.is_nil(proc.poll(pid), "the server is still running")

    -- the fixed save is picked up
    save(counter("v3"))
    switch_within("v3", 2)

    -- SIGHUP: every script again (same content: a new version number)
    proc.kill(pid, "HUP")
    assert.is_truthy(send_until(function()
      return stderr_of():match("count%[1%] now runs [^\n]*count%.lua %(version 4%)")
         and stderr_of():match("keyby%[0%] now runs [^\n]*keyby%.lua %(version 2%)")
    end, 5), "SIGHUP did not reload; stderr:\n" .. proc.tail(stderr_of()))
    assert.matches("SIGHUP: reloading 2 scripts", stderr_of())
    pump_for(0.3)
    assert_continuous({ "v1", "v2", "v3" })
    stop(pid)
    assert_continuous({ "v1", "v2", "v3" })
  end)

  it("a worker stuck in a long batch does not hold reloads: the prepare round times out", function()
    local pid = start_tcp({ SLUICE_PREPARE_TIMEOUT_MS = "400" })
    assert.is_truthy(send_until(function() return count_tag("v1") >= 20 end, 10),
      "no v1 output; stderr:\n" .. proc.tail(stderr_of()))
    -- keyby spins for 3 s of CPU on "slow", saying when it starts and ends
    proc.write_file(dir .. "/.keyby.tmp", [[
local op = {}
function op.process(ctx, v)
  if v == "slow" then
    print("spinning")
    local t = os.clock() + 3
    while os.clock() < t do end
    print("spun")
  end
  ctx:emit(v, v)
end
return op
]])
    assert(os.rename(dir .. "/.keyby.tmp", dir .. "/keyby.lua"))
    assert.is_truthy(send_until(function()
      return stderr_of():match("keyby%[0%] now runs [^\n]*keyby%.lua %(version 2%)")
    end, 5), "keyby v2 not loaded; stderr:\n" .. proc.tail(stderr_of()))
    assert(proc.send_all(client, "slow\n"))
    assert.is_truthy(proc.wait_for(function() return stderr_of():find("spinning", 1, true) end, 5, 0.02),
      "the slow record did not arrive; stderr:\n" .. proc.tail(stderr_of()))
    save(counter("v2")) -- its worker is in its long batch: no answer in time
    assert.is_truthy(proc.wait_for(function()
      return stderr_of():match("reload of [^\n]*count%.lua failed: 1 worker did not answer within 400 ms[^\n]*version 1 keeps running")
    end, 5, 0.05), "no prepare timeout; stderr:\n" .. proc.tail(stderr_of()))
    -- once the worker is free, the next save reloads as usual
    assert.is_truthy(proc.wait_for(function() return stderr_of():find("spun", 1, true) end, 10, 0.05),
      "the slow batch did not end; stderr:\n" .. proc.tail(stderr_of()))
    save(counter("v3"))
    switch_within("v3", 3)
    assert.are.equal(0, count_tag("v2"))
    stop(pid)
  end)

  it("a deleted and re-created script is picked up", function()
    local pid = start_tcp()
    assert.is_truthy(send_until(function() return count_tag("v1") > 0 end, 10))
    os.remove(dir .. "/count.lua")
    pump_for(0.3)
    assert.is_nil(proc.poll(pid))
    proc.write_file(dir .. "/count.lua", counter("v2"))
    switch_within("v2", 2)
    stop(pid)
    assert_continuous({ "v1", "v2" })
  end)

  it("the polling fallback (SLUICE_WATCH=poll) picks up a rename too", function()
    local pid = start_tcp({ SLUICE_WATCH = "poll" })
    assert.is_truthy(send_until(function() return count_tag("v1") > 0 end, 10))
    assert.matches("watching 2 scripts %(polling%)", stderr_of())
    save(counter("v2"))
    switch_within("v2", 2.5)
    save(BROKEN)
    assert.is_truthy(send_until(function()
      return stderr_of():match("count%.lua:4: ")
    end, 5), "no FILE:LINE error; stderr:\n" .. proc.tail(stderr_of()))
    save(counter("v3"))
    switch_within("v3", 2.5)
    stop(pid)
    assert_continuous({ "v1", "v2", "v3" })
  end)

  it("with checkpoints, the swap waits for a barrier (requested at once); migrate reshapes state", function()
    proc.write_file(dir .. "/keyby.lua", [[
local op = {}
function op.process(ctx, v) local k = "k" .. (tonumber(v) % 3); ctx:emit(k, k) end
return op
]])
    proc.write_file(dir .. "/count.lua", counter("v1"))
    local conf = proc.write_file(dir .. "/p.conf", [[
pipeline "ck" { workers = 2, checkpoint = { every = "30s", store = "file://state" } }
source   "gen"   { kind = "generator", rate = 300 }
operator "keyby" { script = "keyby.lua", from = "gen" }
operator "count" { script = "count.lua", from = "keyby", grouping = "key", parallelism = 2 }
sink     "out"   { kind = "file", path = "out.txt", from = "count" }
]])
    local pid = proc.start_sluice(conf, {})
    -- exactly_once: output is published at checkpoints; the first one comes
    -- from the reload's request, well before `every`
    socket.sleep(0.5)
    save(counter("w2", [[
function op.migrate(old, key) return { n = old.n + 1000 } end
]]))
    local ok = proc.wait_for(function()
      return stderr_of():match("count%[1%] now runs [^\n]*%(version 2%)")
        and stderr_of():match("count%[0%] now runs [^\n]*%(version 2%)")
    end, 2, 0.05)
    assert.is_truthy(ok, "not swapped within 2 s; stderr:\n" .. proc.tail(stderr_of()))
    local s = stderr_of()
    local at = s:find("at the next checkpoint barrier", 1, true)
    assert.is_truthy(at, s)
    -- the swap comes after checkpoint 1 was triggered, with its snapshot
    assert.is_truthy(s:find("now runs", at, true))
    socket.sleep(0.5)
    local code = proc.stop(pid, "TERM", 10)
    assert.are.equal(0, code, proc.tail(stderr_of()))
    -- per key: v1 counts 1..m, then w2 counts from m + 1001 on
    local last, tag = {}, {}
    for _, r in ipairs(records()) do
      local want = (last[r.key] or 0) + 1
      if r.tag == "w2" and tag[r.key] ~= "w2" then want = want + 1000 end
      assert.are.equal(want, r.n, ("key %s %s"):format(r.key, r.tag))
      assert.is_true(not (tag[r.key] == "w2" and r.tag == "v1"), "back to v1")
      last[r.key], tag[r.key] = r.n, r.tag
    end
  end)
end)
