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

local http = require("support.http")
local get, post, parse_metrics, metric = http.get, http.post, http.parse_metrics, http.metric

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
    -- the API listens from the start (503 restoring); wait for it to run
    local ok = proc.wait_for(function()
      if not proc.alive(pid) then return "dead" end
      return (http.get(port, "/health", { timeout = 1 })) == 200
    end, 10, 0.05)
    assert(ok == true, "admin did not come up: " ..
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
      assert.truthy(body:find('"reloads":{"ok":0,"failed":0,"conf_ok":0,"conf_failed":0}', 1, true), body)
      assert.truthy(body:find('"scripts":[{"path":"', 1, true), body)
      assert.truthy(body:find('"version":1,"hash":"%x+","since_ms":%d+,"last_error":null}'), body)
      assert.truthy(body:find('"errors":{"warn":%d+,"error":%d+,"last":%['), body)
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
      -- latency: every line reached split through its channel from the
      -- source, so split's histograms together counted 3000 records
      assert.are.equal(3000, metric(samples, "sluice_operator_latency_seconds_count", 'operator="split"'))
      assert.are.equal(3000, metric(samples, "sluice_operator_latency_seconds_bucket",
        'operator="split",instance="0",le="+Inf"') +
        metric(samples, "sluice_operator_latency_seconds_bucket", 'operator="split",instance="1",le="+Inf"'))
      assert.is_true(metric(samples, "sluice_operator_latency_seconds_sum", 'operator="split"') > 0)
      assert.is_true(metric(samples, "sluice_operator_busy_seconds_total", 'operator="split"') > 0)
      -- count gets the words that cross workers through channels, the rest
      -- from split on its own worker (local exchange): all in its histograms
      assert.are.equal(total, metric(samples, "sluice_operator_latency_seconds_count", 'operator="count"'))
      assert.is_true(metric(samples, "sluice_operator_busy_seconds_total", 'operator="count"') > 0)
      assert.truthy(samples["sluice_sink_latency_seconds_bucket"])
      -- the file is read to its end: no lag, the offset is its size
      local size = #proc.read_file(dir .. "/in.txt")
      assert.are.equal(size, metric(samples, "sluice_source_offset", 'source="lines"'))
      assert.are.equal(0, metric(samples, "sluice_source_lag_bytes", 'source="lines"'))
      assert.are.equal(0, metric(samples, "sluice_conf_reloads_total"))
      assert.truthy(metric(samples, "sluice_log_events_total", 'level="error"'))
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
        local status, _, resp = http.request(port, raw)
        assert(status == 400 or status == nil,
          name .. ": expected 400 or a closed connection, got " .. tostring(resp))
        assert.is_true(proc.alive(pid), name .. " killed the server")
      end
      -- truncated: the client stops sending in the middle of the head
      for _, raw in ipairs({ "GET /health HTTP/1.1\r\nHost: x\r\n", "GET /hea", "POST /reload HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc" }) do
        local status, _, resp = http.request(port, raw, { half_close = true })
        assert(status == 400 or status == nil, "truncated: got " .. tostring(resp))
      end
      -- a body over 1 MiB is refused from its Content-Length
      local status = http.request(port, "POST /reload HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
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
      assert.are.equal(405, (http.request(port, "DELETE /metrics HTTP/1.1\r\n\r\n")))
    end)

    it("POST /checkpoint answers once the checkpoint is stored", function()
      local status, body = post(port, "/checkpoint")
      assert.are.equal(200, status, body)
      local id, bytes = body:match('^{"id":(%d+),"status":"completed","duration_ms":%d+,"bytes":(%d+)}\n$')
      id, bytes = tonumber(id), tonumber(bytes)
      assert.truthy(id, body)
      -- stored already when answered: the metrics and the store say so
      local samples = http.metrics(port)
      assert.are.equal(id, metric(samples, "sluice_checkpoint_last_id"))
      assert.are.equal(bytes, metric(samples, "sluice_checkpoint_last_size_bytes"))
      local f = io.open(("%s/state/chk-%020d.ckpt"):format(dir, id), "rb")
      assert.truthy(f, "no image of checkpoint " .. id)
      assert.are.equal(bytes, f:seek("end"))
      f:close()
      local _, st = get(port, "/status")
      assert.truthy(st:find('"last":{"id":' .. id, 1, true), st)
      -- the next one gets the next id; ?wait=false answers 202 at once
      local status2, body2 = post(port, "/checkpoint")
      assert.are.equal(200, status2, body2)
      assert.are.equal(id + 1, tonumber(body2:match('^{"id":(%d+)')))
      local status3, body3 = post(port, "/checkpoint?wait=false")
      assert.are.equal(202, status3, body3)
      assert.are.equal(id + 2, tonumber(body3:match('^{"id":(%d+),"status":"started"}')))
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
