-- End to end: the tcp source (many clients, max_line, SIGTERM) and the tcp sink.
local proc = require("support.proc")
local socket = require("socket")

describe("e2e tcp", function()
  local dir, clients

  before_each(function()
    dir = proc.tmpdir()
    clients = {}
  end)

  after_each(function()
    for _, c in ipairs(clients) do pcall(c.close, c) end
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function client(port, pid)
    local c, err = proc.connect("127.0.0.1", port, 10, pid)
    assert.is_not_nil(c, err)
    clients[#clients + 1] = c
    return c
  end

  local function start(conf_text)
    local conf = proc.write_file(dir .. "/p.conf", conf_text)
    return proc.start_sluice(conf, { "--workers", "2" })
  end

  local function stderr_of() return proc.read_file(dir .. "/stderr") or "" end

  it("takes 3000 lines from 3 concurrent clients, then exits 0 on SIGTERM", function()
    local port = proc.free_port()
    local pid = start(([[
source "in"  { kind = "tcp", listen = "127.0.0.1:%d" }
sink   "out" { kind = "file", path = "out.txt", from = "in" }
]]):format(port))
    local cs = { client(port, pid), client(port, pid), client(port, pid) }
    local want = {}
    -- interleaved: 10 rounds of 100 lines per client
    for round = 0, 9 do
      for ci, c in ipairs(cs) do
        local chunk = {}
        for i = round * 100 + 1, round * 100 + 100 do
          local l = ("client%d-line%04d"):format(ci, i)
          chunk[#chunk + 1] = l
          want[#want + 1] = l
        end
        assert(proc.send_all(c, table.concat(chunk, "\n") .. "\n"))
      end
    end
    for _, c in ipairs(cs) do c:close() end
    local got = proc.wait_for(function()
      local ls = proc.file_lines(dir .. "/out.txt")
      return #ls >= 3000 and ls
    end, 10, 0.05)
    assert.is_not_nil(got, "the file has " .. #proc.file_lines(dir .. "/out.txt") ..
      " lines after 10 s (sinks flush every 100 ms); stderr:\n" .. proc.tail(stderr_of()))
    assert.is_nil(proc.poll(pid), "the server is still running")
    local t0 = proc.now()
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 5)
    assert.are.equal(0, code, "exit after SIGTERM (nil = still running after 5 s); stderr:\n" .. proc.tail(stderr_of()))
    assert.is_true(proc.now() - t0 < 5)
    assert.are.same(proc.sorted(want), proc.sorted(proc.file_lines(dir .. "/out.txt")))
  end)

  it("a line reaches the file sink within 1 s (sinks flush every 100 ms); the log names at_most_once", function()
    local port = proc.free_port()
    local pid = start(([[
source "in"  { kind = "tcp", listen = "127.0.0.1:%d" }
sink   "out" { kind = "file", path = "out.txt", from = "in" }
]]):format(port))
    local c = client(port, pid)
    -- the first line, then one more after the server surely runs
    assert(proc.send_all(c, "first\n"))
    assert.is_truthy(proc.wait_for(function() return #proc.file_lines(dir .. "/out.txt") >= 1 end, 10, 0.02))
    local t0 = proc.now()
    assert(proc.send_all(c, "second\n"))
    local ok = proc.wait_for(function() return #proc.file_lines(dir .. "/out.txt") >= 2 end, 5, 0.01)
    local dt = proc.now() - t0
    assert.is_truthy(ok, "the second line did not reach the file within 5 s")
    assert.is_true(dt < 1, ("the line took %.2f s to reach the file"):format(dt))
    -- the client stays connected; the server keeps running
    assert.is_nil(proc.poll(pid))
    assert.are.equal(0, proc.stop(pid, "TERM", 5))
    assert.are.same({ "first", "second" }, proc.file_lines(dir .. "/out.txt"))
    assert.is_truthy(stderr_of():find("at_most_once", 1, true),
      "run logs the guarantee in force (a socket gives at_most_once):\n" .. proc.tail(stderr_of()))
  end)

  it("rejects an oversized line, logs it, keeps the other lines and stays up", function()
    local port = proc.free_port()
    local pid = start(([[
source   "in"  { kind = "tcp", listen = "127.0.0.1:%d", max_line = 100 }
sink     "out" { kind = "file", path = "out.txt", from = "in" }
]]):format(port))
    local c1 = client(port, pid)
    local c2 = client(port, pid)
    local want = {}
    local bad = ("X"):rep(5000)
    local good1 = {}
    for i = 1, 10 do good1[i] = "good1-" .. i; want[#want + 1] = good1[i] end
    assert(proc.send_all(c1, bad .. "\n" .. table.concat(good1, "\n") .. "\n"))
    local l2 = {}
    for i = 1, 200 do l2[i] = "second-" .. i; want[#want + 1] = l2[i] end
    assert(proc.send_all(c2, table.concat(l2, "\n") .. "\n"))
    -- a line of exactly max_line bytes is accepted
    local exact = ("e"):rep(100)
    want[#want + 1] = exact
    assert(proc.send_all(c2, exact .. "\n"))
    c1:close()
    c2:close()

    local function has_all(list)
      local set = {}
      for _, l in ipairs(proc.file_lines(dir .. "/out.txt")) do set[l] = true end
      for _, l in ipairs(list) do if not set[l] then return false end end
      return true
    end
    assert.is_truthy(proc.wait_for(function() return has_all(l2) end, 10, 0.05),
      "the second client's lines did not all arrive; stderr:\n" .. proc.tail(stderr_of()))
    assert.is_nil(proc.poll(pid), "the server ended after an oversized line; stderr:\n" .. proc.tail(stderr_of()))

    -- still up: a new client's line arrives
    local c3 = client(port, pid)
    assert(proc.send_all(c3, "after-the-bad-line\n"))
    c3:close()
    want[#want + 1] = "after-the-bad-line"
    assert.is_truthy(proc.wait_for(function() return has_all({ "after-the-bad-line" }) end, 10, 0.05),
      "a client connecting after the oversized line was not served")
    proc.wait_for(function() return has_all(want) end, 3, 0.05)

    local code = proc.stop(pid, "TERM", 5)
    assert.are.equal(0, code)
    local got = proc.file_lines(dir .. "/out.txt")
    for _, l in ipairs(got) do
      assert.is_true(#l <= 100, "a line of " .. #l .. " bytes got through max_line = 100")
    end
    -- the first client's good lines after the oversized one are kept too
    assert.are.same(proc.sorted(want), proc.sorted(got))
    local log = stderr_of()
    local mentioned = false
    for _, l in ipairs(proc.lines(log)) do
      local ll = l:lower()
      if ll:find("max_line", 1, true) or ll:find("too long", 1, true) or ll:find("longer", 1, true)
        or ll:find("oversize", 1, true) or ll:find("reject", 1, true) or ll:find("discard", 1, true) then
        mentioned = true
      end
    end
    assert.is_true(mentioned, "stderr does not mention the rejected line:\n" .. proc.tail(log))
  end)

  it("tcp sink: generator(count=1000) -> a listener here gets exactly 1..1000", function()
    local server = assert(socket.bind("127.0.0.1", 0))
    clients[#clients + 1] = server
    local _, port = server:getsockname()
    local pid = start(([[
source "gen" { kind = "generator", count = 1000 }
sink   "net" { kind = "tcp", connect = "127.0.0.1:%d", from = "gen" }
]]):format(port))
    server:settimeout(10)
    local conn, err = server:accept()
    assert.is_not_nil(conn, "sluice did not connect within 10 s: " .. tostring(err) ..
      "; stderr:\n" .. proc.tail(stderr_of()))
    clients[#clients + 1] = conn
    conn:settimeout(10)
    local got = {}
    while true do
      local l, e = conn:receive("*l")
      if not l then
        assert.are.equal("closed", e, "reading from the sink")
        break
      end
      got[#got + 1] = l
    end
    local code = proc.wait(pid, 10)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr_of()))
    local want = {}
    for i = 1, 1000 do want[i] = tostring(i) end
    assert.are.same(want, got)
  end)
end)
