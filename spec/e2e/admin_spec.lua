-- End to end: the admin HTTP server (docs/operations.md; issue 6 items 1
-- and 6). The specs speak HTTP/1.1 over a plain luasocket TCP connection:
-- /health, /metrics checked line by line against the Prometheus text
-- format, /status, a corpus of malformed requests (400 or a closed
-- connection, and the server stays up), 404/405, POST /checkpoint, POST
-- /reload, and /state/count/KEY giving the exact count after a known input.
local proc = require("support.proc")
local socket = require("socket")
local conf = require("sluice.conf")

-- split: one record per word, keyed by the word.
local SPLIT = [[
local op = {}
function op.process(ctx, line)
  for w in line:gmatch("%S+") do ctx:emit(w, w) end
end
return op
]]

-- count: a counter per key in ctx.state.
local COUNT = [[
local op = {}
function op.process(ctx, _)
  local st = ctx.state
  st.n = (st.n or 0) + 1
end
return op
]]

-- One request (raw bytes) on a new connection; returns status (nil when
-- the server closed without answering), body, the whole response.
local function http(port, raw, opts)
  opts = opts or {}
  local c = assert(proc.connect("127.0.0.1", port, 5))
  c:settimeout(5)
  proc.send_all(c, raw, 5) -- may fail when the server answers early
  if opts.half_close then c:shutdown("send") end
  local resp, _, partial = c:receive("*a")
  c:close()
  resp = resp or partial
  if not resp or resp == "" then return nil, nil, resp end
  local status = tonumber(resp:match("^HTTP/1%.1 (%d%d%d) "))
  local body = resp:match("\r\n\r\n(.*)$")
  return status, body, resp
end

local function get(port, path)
  return http(port, "GET " .. path .. " HTTP/1.1\r\nHost: localhost\r\n\r\n")
end

local function post(port, path)
  return http(port, "POST " .. path ..
    " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
end

-- Prometheus text format 0.0.4, one pattern per kind of line.
local NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*"
local LABEL = "[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\n]*\""
local NUMBER = "[-+]?[0-9]*%.?[0-9]+[eE]?[-+]?[0-9]*"

local function check_sample(line)
  local name, rest = line:match("^(" .. NAME .. ")(.*)$")
  if not name then return nil end
  if rest:sub(1, 1) == "{" then
    local labels, after = rest:match("^{(.-)}(.*)$")
    if not labels then return nil end
    local i = 1
    while i <= #labels do
      local s, e = labels:find("^" .. LABEL, i)
      if not s then return nil end
      i = e + 1
      if i <= #labels then
        if labels:sub(i, i) ~= "," then return nil end
        i = i + 1
      end
    end
    rest = after
  end
  local v = rest:match("^ (%S+)$")
  if not v then return nil end
  if not (v:match("^" .. NUMBER .. "$") or v == "NaN" or v == "+Inf" or v == "-Inf") then
    return nil
  end
  return name, tonumber(v)
end

-- Validates an exposition; returns { [name] = { samples } } or fails.
local function parse_metrics(text)
  local types, samples = {}, {}
  assert.is_true(text:sub(-1) == "\n", "the exposition must end with a newline")
  for _, line in ipairs(proc.lines(text)) do
    if line:sub(1, 1) == "#" then
      local help = line:match("^# HELP (" .. NAME .. ") %S.*$")
      local tname, t = line:match("^# TYPE (" .. NAME .. ") (%a+)$")
      assert(help or tname, "bad comment line: " .. line)
      if tname then
        assert(t == "counter" or t == "gauge", "bad type: " .. line)
        assert(not types[tname], "TYPE given twice: " .. line)
        types[tname] = t
      end
    else
      local name, v = check_sample(line)
      assert(name, "bad sample line: " .. line)
      assert(types[name], "sample before its TYPE: " .. line)
      if types[name] == "counter" then
        assert(name:match("_total$"), "a counter's name ends in _total: " .. line)
        assert(v >= 0, "negative counter: " .. line)
      end
      assert(name:match("^sluice_"), "not prefixed sluice_: " .. line)
      samples[name] = samples[name] or {}
      samples[name][#samples[name] + 1] = { line = line, value = v }
    end
  end
  return samples
end

local function metric(samples, name, match)
  local total, found = 0, false
  for _, s in ipairs(samples[name] or {}) do
    if not match or s.line:find(match, 1, true) then
      total, found = total + s.value, true
    end
  end
  return found and total or nil
end

describe("e2e admin HTTP server", function()
  local dir, pid, port
  local expected = {}

  local function write_input()
    local lines = {}
    math.randomseed(6)
    for i = 1, 3000 do
      local words = {}
      for j = 1, 1 + (i % 4) do
        local w = "w" .. math.random(1, 40)
        words[j] = w
        expected[w] = (expected[w] or 0) + 1
      end
      lines[i] = table.concat(words, " ")
    end
    proc.write_file(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
  end

  local function start(extra_pipeline)
    port = proc.free_port()
    proc.write_tree(dir, {
      ["split.lua"] = SPLIT,
      ["count.lua"] = COUNT,
      ["p.conf"] = ([[
pipeline "adm" {
  workers = 2,
  admin = "127.0.0.1:%d",%s
}
source   "lines" { kind = "file", path = "in.txt", follow = true }
operator "split" { script = "split.lua", from = "lines", parallelism = 2 }
operator "count" { script = "count.lua", from = "split", grouping = "key",
                   parallelism = 2 }
sink     "out"   { kind = "file", path = "out.txt", from = "count" }
]]):format(port, extra_pipeline or ""),
    })
    pid = proc.start_sluice(dir .. "/p.conf")
    local ok = proc.wait_for(function()
      if not proc.alive(pid) then return "dead" end
      local c = socket.tcp()
      c:settimeout(0.2)
      local up = c:connect("127.0.0.1", port)
      c:close()
      return up
    end, 10)
    assert(ok == 1, "admin did not come up: " ..
      proc.tail(proc.read_file(dir .. "/stderr")))
  end

  before_each(function()
    dir = proc.tmpdir()
    expected = {}
    write_input()
  end)

  after_each(function()
    if pid then proc.stop(pid, "TERM", 10) end
    proc.reap_all()
    proc.rm_rf(dir)
    pid = nil
  end)

  describe("with checkpoints", function()
    before_each(function()
      start('\n  checkpoint = { every = "10m", store = "file://state" },')
    end)

    it("GET /health is 200 ok; GET /status describes the pipeline", function()
      local status, body, resp = get(port, "/health")
      assert.are.equal(200, status, resp)
      assert.are.equal("ok\n", body)
      assert.truthy(resp:find("\r\nConnection: close\r\n", 1, true))
      status, body = get(port, "/status")
      assert.are.equal(200, status)
      assert.truthy(body:find('"pipeline":"adm"', 1, true), body)
      assert.truthy(body:find('"guarantee":"exactly_once"', 1, true), body)
      assert.truthy(body:find('"workers":2', 1, true), body)
      assert.truthy(body:find('{"name":"count","type":"operator","kind":null,', 1, true), body)
      assert.truthy(body:find('"grouping":"key","parallelism":2,"threads":[', 1, true), body)
      assert.truthy(body:find('"checkpoint":{"enabled":true', 1, true), body)
      assert.truthy(body:find('"reloads":{"ok":0,"failed":0}', 1, true), body)
    end)

    it("GET /metrics is valid Prometheus text with the pipeline's counts", function()
      local total = 0
      for _, n in pairs(expected) do total = total + n end
      local samples
      -- the workers publish their counts every 100 ms while busy
      proc.wait_for(function()
        local status, body = get(port, "/metrics")
        assert.are.equal(200, status)
        samples = parse_metrics(body)
        return metric(samples, "sluice_operator_records_in_total", 'operator="count"') == total
      end, 15, 0.1)
      assert.are.equal(3000, metric(samples, "sluice_source_records_out_total", 'source="lines"'))
      assert.are.equal(3000, metric(samples, "sluice_operator_records_in_total", 'operator="split"'))
      assert.are.equal(total, metric(samples, "sluice_operator_records_out_total", 'operator="split"'))
      assert.are.equal(total, metric(samples, "sluice_operator_records_in_total", 'operator="count"'))
      assert.are.equal(0, metric(samples, "sluice_operator_errors_total"))
      assert.are.equal(1, metric(samples, "sluice_up"))
      for _, name in ipairs({ "sluice_sink_records_in_total", "sluice_operator_dead_letters_total",
          "sluice_operator_queue_batches", "sluice_worker_lua_memory_bytes",
          "sluice_checkpoints_completed_total", "sluice_checkpoints_failed_total",
          "sluice_checkpoint_last_duration_seconds", "sluice_checkpoint_last_size_bytes",
          "sluice_reloads_total", "sluice_source_offset" }) do
        assert.truthy(samples[name], "missing " .. name)
      end
      assert.is_true(metric(samples, "sluice_worker_lua_memory_bytes", 'worker="1"') > 0)
    end)

    it("answers malformed requests with 400 (or closes) and stays up", function()
      local corpus = {
        garbage = "\0\1\2\3 this is not http \255\254\r\n\r\n",
        bad_method = "FETCH /health HTTP/1.1\r\nHost: x\r\n\r\n",
        lowercase_method = "get /health HTTP/1.1\r\nHost: x\r\n\r\n",
        bad_version = "GET /health HTTP/x.y\r\n\r\n",
        header_without_colon = "GET /health HTTP/1.1\r\nNoColon\r\n\r\n",
        empty_header_name = "GET /health HTTP/1.1\r\n: v\r\n\r\n",
        control_in_header_name = "GET /health HTTP/1.1\r\nA\1b: v\r\n\r\n",
        bad_content_length = "POST /reload HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        two_content_lengths = "POST /reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        bad_chunk = "POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        control_in_url = "GET /hea\1lth HTTP/1.1\r\n\r\n",
        oversized_header = "GET /health HTTP/1.1\r\nX-Big: " .. ("a"):rep(20000) .. "\r\n\r\n",
        many_headers = "GET /health HTTP/1.1\r\n" .. ("X-A: b\r\n"):rep(3000) .. "\r\n",
        oversized_url = "GET /" .. ("a"):rep(17000) .. " HTTP/1.1\r\n\r\n",
      }
      for name, raw in pairs(corpus) do
        local status, _, resp = http(port, raw)
        assert(status == 400 or status == nil,
          name .. ": expected 400 or a closed connection, got " .. tostring(resp))
        assert.is_true(proc.alive(pid), name .. " killed the server")
      end
      -- truncated: the client stops sending in the middle of the head
      for _, raw in ipairs({ "GET /health HTTP/1.1\r\nHost: x\r\n", "GET /hea", "POST /reload HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc" }) do
        local status, _, resp = http(port, raw, { half_close = true })
        assert(status == 400 or status == nil, "truncated: got " .. tostring(resp))
      end
      -- a body over 1 MiB is refused from its Content-Length
      local status = http(port, "POST /reload HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
      assert.are.equal(413, status)
      assert.are.equal(200, (get(port, "/health")))
      assert.is_true(proc.alive(pid))
    end)

    it("404 for an unknown path, 405 for a wrong method", function()
      assert.are.equal(404, (get(port, "/nope")))
      assert.are.equal(404, (get(port, "/")))
      local status, _, resp = post(port, "/health")
      assert.are.equal(405, status)
      assert.truthy(resp:find("\r\nAllow: GET\r\n", 1, true))
      assert.are.equal(405, (get(port, "/checkpoint")))
      assert.are.equal(405, (post(port, "/state/count/w1")))
      assert.are.equal(405, (http(port, "DELETE /metrics HTTP/1.1\r\n\r\n")))
    end)

    it("POST /checkpoint takes a checkpoint and returns its id", function()
      local status, body = post(port, "/checkpoint")
      assert.are.equal(202, status, body)
      local id = tonumber(body:match('^{"id":(%d+)}'))
      assert.truthy(id, body)
      local done = proc.wait_for(function()
        local _, m = get(port, "/metrics")
        return (metric(parse_metrics(m), "sluice_checkpoint_last_id") or 0) >= id
      end, 10, 0.1)
      assert.truthy(done, "checkpoint " .. id .. " did not complete")
      local _, st = get(port, "/status")
      assert.truthy(st:find('"last":{"id":' .. id, 1, true), st)
      local status2, body2 = post(port, "/checkpoint")
      assert.are.equal(202, status2)
      assert.is_true(tonumber(body2:match('^{"id":(%d+)}')) > id)
    end)

    it("GET /state/count/KEY is the exact count after a known input", function()
      local total = 0
      for _, n in pairs(expected) do total = total + n end
      assert.truthy(proc.wait_for(function()
        local _, body = get(port, "/metrics")
        return metric(parse_metrics(body), "sluice_operator_records_in_total", 'operator="count"') == total
      end, 15, 0.1), "the input was not processed")
      for w, n in pairs(expected) do
        local status, body = get(port, "/state/count/" .. w)
        assert.are.equal(200, status, body)
        local inst = body:match('"instance":(%d)')
        assert.are.equal(('{"operator":"count","key":"%s","instance":%s,"state":{"n":%d}}\n')
          :format(w, inst, n), body)
      end
      local status, body = get(port, "/state/count/nokey")
      assert.are.equal(404, status, body)
      assert.are.equal(404, (get(port, "/state/nope/w1")))
      assert.are.equal(404, (get(port, "/state/lines/w1"))) -- a source
      assert.are.equal(400, (get(port, "/state/count/%zz")))
      -- percent-encoded keys
      status, body = get(port, "/state/count/w%31")
      assert.are.equal(200, status)
      assert.truthy(body:find('"key":"w1"', 1, true))
      -- split is not key-grouped and has two instances
      assert.are.equal(409, (get(port, "/state/split/w1")))
    end)

    it("POST /reload reloads the scripts (202)", function()
      local status, body = post(port, "/reload")
      assert.are.equal(202, status, body)
      assert.truthy(proc.wait_for(function()
        return (proc.read_file(dir .. "/stderr") or ""):find("POST /reload", 1, true)
      end, 5))
      assert.are.equal(200, (get(port, "/health")))
    end)
  end)

  describe("without checkpoints", function()
    before_each(function() start() end)

    it("POST /checkpoint is 409", function()
      local status, body = post(port, "/checkpoint")
      assert.are.equal(409, status)
      assert.truthy(body:find("checkpointing is off", 1, true))
      local _, st = get(port, "/status")
      assert.truthy(st:find('"checkpoint":{"enabled":false', 1, true), st)
    end)

    it("stops listening when the pipeline stops", function()
      assert.are.equal(200, (get(port, "/health")))
      proc.kill(pid, "TERM")
      assert.are.equal(0, proc.wait(pid, 15))
      local c = socket.tcp()
      c:settimeout(1)
      assert.is_nil((c:connect("127.0.0.1", port)))
      c:close()
    end)
  end)
end)

describe("conf: admin", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rm_rf(dir) end)

  local function load(admin)
    local p = proc.write_file(dir .. "/a.conf", ([[
pipeline "a" { admin = %s }
source "s" { kind = "stdin" }
sink "o" { kind = "stdout", from = "s" }
]]):format(admin))
    return conf.load(p, { cwd = dir })
  end

  it("a bare port binds to loopback; any other address must be given", function()
    assert.are.equal("127.0.0.1:9600", load("9600").admin)
    assert.are.equal("127.0.0.1:9600", load('"9600"').admin)
    assert.are.equal("127.0.0.1:9600", load('":9600"').admin)
    assert.are.equal("127.0.0.1:9600", load('"localhost:9600"').admin)
    assert.are.equal("0.0.0.0:9600", load('"0.0.0.0:9600"').admin)
    assert.are.equal("[::1]:9600", load('"[::1]:9600"').admin)
    local plan, errs = load('"example.com:80"')
    assert.is_nil(plan)
    assert.truthy(errs[1]:find('admin must be "HOST:PORT"', 1, true), errs[1])
    plan, errs = load("70000")
    assert.is_nil(plan)
    assert.truthy(errs[1]:find("admin must be", 1, true))
  end)
end)
