-- End to end: back-pressure. tcp source -> trivial op -> tcp sink into a
-- reader here that takes 4 KiB every 10 ms. A producer process pushes
-- 100-byte lines as fast as it can (200 MB in all). The server must not
-- buffer: its RSS stays under RSS_BOUND_KB and the producer's sends stall.
local proc = require("support.proc")
local socket = require("socket")

local RSS_BOUND_KB = 150 * 1024 -- 150 MB
local TOTAL_BYTES = 200 * 1000 * 1000
local STALL_BOUND = 64 * 1024 * 1024 -- bytes the pipeline may hold (socket buffers, rings)

-- argv: port total_bytes progress_file. Writes "SENT_BYTES DONE" to the
-- progress file after every 64 KiB chunk.
local PRODUCER = [[
local socket = require("socket")
local port, total, progress = tonumber(arg[1]), tonumber(arg[2]), arg[3]
local c
for _ = 1, 500 do
  c = socket.tcp()
  if c:connect("127.0.0.1", port) then break end
  c:close(); c = nil
  socket.sleep(0.02)
end
if not c then os.exit(2) end
c:settimeout(nil)
local pad = ("p"):rep(91)
local lines = {}
for i = 1, 655 do lines[i] = ("%07d"):format(i) .. " " .. pad .. "\n" end -- 100 bytes
local chunk = table.concat(lines)
local sent = 0
local function report(done)
  local f = io.open(progress .. ".tmp", "w")
  f:write(sent, " ", done and 1 or 0, "\n")
  f:close()
  os.rename(progress .. ".tmp", progress)
end
report(false)
while sent < total do
  local ok, err = c:send(chunk)
  if not ok then io.stderr:write("producer: ", tostring(err), "\n"); os.exit(3) end
  sent = sent + #chunk
  report(false)
end
report(true)
c:close()
]]

describe("e2e back-pressure", function()
  local dir, socks

  before_each(function()
    dir = proc.tmpdir()
    socks = {}
  end)

  after_each(function()
    for _, s in ipairs(socks) do pcall(s.close, s) end
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  it("a slow tcp sink stalls the producer instead of growing memory", function()
    local server = assert(socket.bind("127.0.0.1", 0))
    socks[#socks + 1] = server
    local _, out_port = server:getsockname()
    local in_port = proc.free_port()
    proc.write_tree(dir, {
      ["pass.lua"] = "local op = {}\nfunction op.process(ctx, v) ctx:emit(v) end\nreturn op\n",
      ["producer.lua"] = PRODUCER,
      ["p.conf"] = ([[
pipeline "bp" { workers = 2 }
source   "in"  { kind = "tcp", listen = "127.0.0.1:%d" }
operator "op"  { script = "pass.lua", from = "in" }
sink     "out" { kind = "tcp", connect = "127.0.0.1:%d", from = "op" }
]]):format(in_port, out_port),
    })
    local stderr_path = dir .. "/stderr"
    local pid = proc.start_sluice(dir .. "/p.conf", { "--workers", "2" })
    -- wait for the source to listen before starting the producer
    local probe, perr = proc.connect("127.0.0.1", in_port, 10, pid)
    assert.is_not_nil(probe, tostring(perr) .. "; stderr:\n" .. proc.tail(proc.read_file(stderr_path)))
    probe:close()
    local progress = dir .. "/progress"
    local ppid = proc.spawn({ "luajit", dir .. "/producer.lua", tostring(in_port), tostring(TOTAL_BYTES), progress },
      { stderr = dir .. "/producer.err" })

    local function sent()
      local s = proc.read_file(progress)
      local n, done = (s or ""):match("^(%d+) (%d)")
      return tonumber(n) or 0, done == "1"
    end

    server:settimeout(10)
    local conn, aerr = server:accept()
    assert.is_not_nil(conn, "the tcp sink did not connect within 10 s: " .. tostring(aerr) ..
      "; stderr:\n" .. proc.tail(proc.read_file(stderr_path)))
    socks[#socks + 1] = conn

    local consumed, first = 0, nil
    local t0 = proc.now()
    local max_rss, samples = 0, {}
    local sent_at_6, consumed_at_6
    local last_sample = 0
    conn:settimeout(0.01)
    while proc.now() - t0 < 14 do
      local data, err, partial = conn:receive(4096)
      local got = data or partial or ""
      if first == nil and #got > 0 then first = got end
      consumed = consumed + #got
      if err == "closed" then break end
      local t = proc.now() - t0
      if t > 4 and t - last_sample >= 0.5 then
        last_sample = t
        local rss = proc.rss_kb(pid)
        assert.is_not_nil(rss, "sluice ended: " .. tostring(proc.poll(pid)) ..
          "; stderr:\n" .. proc.tail(proc.read_file(stderr_path)))
        samples[#samples + 1] = rss
        if rss > max_rss then max_rss = rss end
        if not sent_at_6 and t >= 6 then sent_at_6, consumed_at_6 = sent(), consumed end
      end
      proc.sleep(0.01)
    end
    local sent_end, done = sent()
    local msg = ("consumed %.1f MB, producer sent %.1f MB (%.1f MB at 6 s), RSS samples (kB): %s"):format(
      consumed / 1e6, sent_end / 1e6, (sent_at_6 or 0) / 1e6, table.concat(samples, " "))

    if os.getenv("SLUICE_E2E_VERBOSE") then io.stderr:write("back-pressure: ", msg, "\n") end
    assert.is_true(consumed > 0, "nothing reached the slow reader; " .. msg)
    assert.are.equal(100, #(first:match("^[^\n]*\n") or ""), "first line: " .. first:sub(1, 120))
    assert.is_true(#samples >= 10, msg)
    assert.is_true(max_rss < RSS_BOUND_KB, "RSS over the bound " .. RSS_BOUND_KB .. " kB; " .. msg)
    assert.is_false(done, "the producer sent all 200 MB: nothing held it back; " .. msg)
    assert.is_nil(proc.poll(ppid), "the producer ended: " .. tostring(proc.poll(ppid)) .. "; " ..
      (proc.read_file(dir .. "/producer.err") or ""))
    assert.is_true(sent_end - consumed < STALL_BOUND,
      "the pipeline holds more than " .. STALL_BOUND / 1048576 .. " MB; " .. msg)
    -- between 6 s and the end the producer advanced about as fast as the reader
    assert.is_true(sent_end - sent_at_6 < (consumed - consumed_at_6) + 16 * 1024 * 1024,
      "the producer was not stalled after 6 s; " .. msg)

    proc.kill(ppid, "KILL")
    proc.kill(pid, "KILL")
  end)
end)
