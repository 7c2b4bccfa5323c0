-- sluice.runtime with a fake port: routing, chaining, batching, errors,
-- the worker calls the C side makes, and the FFI port.
-- Run from the repository root:
--   LUA_PATH="bindings/?.lua;;" busted --lua=luajit spec/lua/runtime_spec.lua
local rt = require("sluice.runtime")
local testing = require("sluice.testing")
local buffer = require("string.buffer")
local ffi = require("ffi")

local OPS = "spec/fixtures/ops/"

-- A port that keeps everything it is given.
local function fake_port()
  local port = { pushes = {}, logs = {}, fails = {}, clock = 0 }
  port.hash = testing.murmur3
  port.now = function() return port.clock end
  port.log = function(level, component, msg)
    port.logs[#port.logs + 1] = { level = level, component = component, msg = msg }
  end
  port.fail = function(code, msg) port.fails[#port.fails + 1] = { code = code, msg = msg } end
  port.push = function(cid, buf, nrec)
    local t = buffer.decode(buf:tostring())
    local recs = {}
    for i = 1, nrec do recs[i] = { value = t[3 * i - 2], key = t[3 * i - 1], time = t[3 * i] } end
    assert(t[3 * nrec + 1] == nil, "more slots than nrec records")
    port.pushes[#port.pushes + 1] = { cid = cid, nrec = nrec, recs = recs }
  end
  return port
end

-- Records per channel id, in push order.
local function by_cid(port)
  local r = {}
  for _, p in ipairs(port.pushes) do
    local l = r[p.cid] or {}
    r[p.cid] = l
    for _, rec in ipairs(p.recs) do l[#l + 1] = rec end
  end
  return r
end

-- Feeds records { {v, k, t}, ... } to instance gid as one encoded batch.
local function feed(w, gid, records, with_nrec)
  local flat = {}
  for i, r in ipairs(records) do
    flat[3 * i - 2], flat[3 * i - 1], flat[3 * i] = r[1], r[2], r[3] or 0
  end
  local b = buffer.new()
  b:encode(flat)
  local p, len = b:ref()
  return w:on_batch(gid, p, len, with_nrec ~= false and #records or nil)
end

local function node(id, name, script, fields)
  local n = { id = id, name = name, type = "operator", parallelism = 1,
              script = script and OPS .. script .. ".lua", on_error = "skip", params = {} }
  for k, v in pairs(fields or {}) do n[k] = v end
  return n
end

local function sink(id, name, p)
  return { id = id, name = name, type = "sink", kind = "stdout", parallelism = p or 1 }
end

local function zero_based(list)
  local r = {}
  for i, v in ipairs(list) do r[i - 1] = v end
  return r
end

-- One operator instance (gid 0, thread 1) with one out edge to a sink of
-- parallelism p over channels 0..p-1.
local function fan_plan(script, grouping, p, fields)
  local chans = {}
  for i = 0, p - 1 do chans[i] = i end
  return {
    max_parallelism = fields and fields.max_parallelism,
    nodes = { [0] = node(0, "a", script, fields), [1] = sink(1, "out", p) },
    instances = {
      [0] = { gid = 0, node = 0, index = 0, thread = 1,
              outs = { { node = 1, grouping = grouping, channels = chans } } },
    },
    n_instances = 1,
  }
end

describe("sluice.runtime", function()
  describe("key grouping", function()
    it("routes each key to exactly one channel, consistently, by Flink's formula", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("echo", "key", 4), 1, port)
      assert.is_true(w:open())
      local recs = {}
      for i = 1, 1000 do recs[i] = { i, "key" .. i, i } end
      feed(w, 0, recs)
      -- the same keys again, in another order, plus nil and number keys
      local again = {}
      for i = 1000, 1, -1 do again[#again + 1] = { -i, "key" .. i, i } end
      again[#again + 1] = { "nil key", nil, 1 }
      again[#again + 1] = { "number key", 12, 1 }
      feed(w, 0, again)
      local where = {}
      local counts = { [0] = 0, 0, 0, 0 }
      for cid, list in pairs(by_cid(port)) do
        for _, r in ipairs(list) do
          local k = r.key == nil and "<nil>" or r.key
          assert(where[k] == nil or where[k] == cid, "key " .. tostring(k) .. " on two channels")
          where[k] = cid
          counts[cid] = counts[cid] + 1
        end
      end
      for i = 1, 1000 do
        local k = "key" .. i
        assert.equal(math.floor((testing.murmur3(k) % 128) * 4 / 128), where[k])
      end
      assert.equal(testing.route(nil, 4), where["<nil>"])
      assert.equal(testing.route("", 4), where["<nil>"])
      assert.equal(testing.route("12", 4), where[12])
      -- every channel got a fair share
      for cid = 0, 3 do assert.is_true(counts[cid] > 300, "channel " .. cid .. " " .. counts[cid]) end
    end)

    it("routes the same with its key cache on and, after many distinct keys, off", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("echo", "key", 4), 1, port)
      local recs = {}
      for i = 1, 40000 do recs[i] = { i, "u" .. i } end
      for i = 1, 40000, 1000 do
        local part = {}
        for j = i, i + 999 do part[#part + 1] = recs[j] end
        feed(w, 0, part)
      end
      -- and hot keys again, after the switch
      feed(w, 0, { { 1, "u1" }, { 2, "u2" }, { 1, "u1" } })
      local n = 0
      for cid, list in pairs(by_cid(port)) do
        for _, r in ipairs(list) do
          assert.equal(math.floor((testing.murmur3(r.key) % 128) * 4 / 128), cid)
          n = n + 1
        end
      end
      assert.equal(40003, n)
      local off = false
      for _, l in ipairs(port.logs) do
        if l.msg:find("key routing cache off", 1, true) then off = true end
      end
      assert.is_true(off)
    end)

    it("uses plan.max_parallelism", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("echo", "key", 3, { max_parallelism = 7 }), 1, port)
      local recs = {}
      for i = 1, 200 do recs[i] = { i, "k" .. i } end
      feed(w, 0, recs)
      for cid, list in pairs(by_cid(port)) do
        for _, r in ipairs(list) do
          assert.equal(math.floor((testing.murmur3(r.key) % 7) * 3 / 7), cid)
        end
      end
    end)
  end)

  it("broadcast reaches every channel, in order", function()
    local port = fake_port()
    local w = rt.new_worker(fan_plan("echo", "broadcast", 3), 1, port)
    local recs = {}
    for i = 1, 10 do recs[i] = { i, "k", i } end
    feed(w, 0, recs)
    local got = by_cid(port)
    for cid = 0, 2 do
      assert.equal(10, #got[cid])
      for i = 1, 10 do assert.equal(i, got[cid][i].value) end
    end
    assert.equal(10, w:stats(0).records_out)
  end)

  it("shuffle balances round-robin", function()
    local port = fake_port()
    local w = rt.new_worker(fan_plan("echo", "shuffle", 4), 1, port)
    local recs = {}
    for i = 1, 1000 do recs[i] = { i } end
    feed(w, 0, recs)
    local got = by_cid(port)
    for cid = 0, 3 do
      assert.equal(250, #got[cid])
      assert.equal(cid + 1, got[cid][1].value)
      assert.equal(cid + 5, got[cid][2].value)
    end
  end)

  it("forward (not chained) sends instance i to the downstream instance i", function()
    local port = fake_port()
    local plan = {
      nodes = { [0] = node(0, "a", "echo", { parallelism = 2 }), [1] = sink(1, "out", 2) },
      instances = {
        [0] = { gid = 0, node = 0, index = 0, thread = 1,
                outs = { { node = 1, grouping = "forward", channels = { [0] = 10 } } } },
        [1] = { gid = 1, node = 0, index = 1, thread = 1,
                outs = { { node = 1, grouping = "forward", channels = { [1] = 11 } } } },
      },
    }
    local w = rt.new_worker(plan, 1, port)
    feed(w, 1, { { "x" }, { "y" } })
    feed(w, 0, { { "z" } })
    local got = by_cid(port)
    assert.same({ "x", "y" }, { got[11][1].value, got[11][2].value })
    assert.same("z", got[10][1].value)
  end)

  describe("forward chaining", function()
    local function chain_plan(params, b_fields)
      local bf = { params = params, on_error = "dead_letter" }
      for k, v in pairs(b_fields or {}) do bf[k] = v end
      return {
        nodes = {
          [0] = node(0, "a", "chain_a", { params = params }),
          [1] = node(1, "b", "chain_b", bf),
          [2] = sink(2, "out"),
          [3] = sink(3, "dead"),
        },
        instances = {
          [0] = { gid = 0, node = 0, index = 0, thread = 1,
                  outs = { { node = 1, grouping = "forward", channels = {}, chained = 1 } } },
          [1] = { gid = 1, node = 1, index = 0, thread = 1, chained_from = { 0 },
                  outs = { { node = 2, grouping = "forward", channels = { [0] = 5 } } },
                  dead = 6 },
          [2] = { gid = 2, node = 2, index = 0, thread = 0 },
          [3] = { gid = 3, node = 3, index = 0, thread = 0 },
        },
      }
    end

    it("passes the same Lua table downstream, without encoding", function()
      local params = { sent = {}, seen = {}, order = {} }
      local port = fake_port()
      local w = rt.new_worker(chain_plan(params), 1, port)
      assert.is_true(w:open())
      assert.same({ "a", "b" }, params.order)    -- upstream first
      feed(w, 0, { { 1, "k", 5 }, { 2, "k", 6 } })
      assert.equal(4, #params.sent)
      assert.equal(4, #params.seen)
      for i = 1, 4 do assert.is_true(rawequal(params.sent[i], params.seen[i])) end
      -- only B's output crossed a channel
      assert.equal(1, #port.pushes)
      assert.equal(5, port.pushes[1].cid)
      assert.same({ "1/1", "1/2", "2/1", "2/2" },
        { port.pushes[1].recs[1].value, port.pushes[1].recs[2].value,
          port.pushes[1].recs[3].value, port.pushes[1].recs[4].value })
      assert.equal(5, port.pushes[1].recs[1].time)
      assert.same({ records_in = 2, records_out = 4, errors = 0, dead_letters = 0 }, w:stats(0))
      assert.same({ records_in = 4, records_out = 4, errors = 0, dead_letters = 0 }, w:stats(1))
    end)

    it("attributes a downstream error to the downstream operator", function()
      local params = { sent = {}, seen = {}, order = {} }
      local port = fake_port()
      local w = rt.new_worker(chain_plan(params), 1, port)
      feed(w, 0, { { "bad", "k", 5 }, { 3, "k", 6 } })
      assert.equal(0, w:stats(0).errors)
      assert.equal(1, w:stats(1).errors)
      local got = by_cid(port)
      -- A's second emit of the failing record still reached B
      assert.same({ "bad/2", "3/1", "3/2" }, { got[5][1].value, got[5][2].value, got[5][3].value })
      local d = got[6][1]
      assert.equal("b", d.value.operator)
      assert.equal("spec/fixtures/ops/chain_b.lua:6: bad record", d.value.error)
      assert.same({ n = "bad", i = 1 }, d.value.value)
      assert.equal("k", d.key)
      assert.equal(5, d.time)
      assert.equal("operator b[0]", port.logs[1].component)
    end)

    it("refuses a chained edge to an instance on another thread", function()
      local plan = chain_plan({ sent = {}, seen = {}, order = {} })
      plan.instances[1].thread = 2
      assert.has_error(function() rt.new_worker(plan, 1, fake_port()) end,
        "plan: operator a[0] chains to instance 1, which is not on thread 1")
    end)

    it("on_end of the upstream does not close the downstream (the C side does)", function()
      local params = { sent = {}, seen = {}, order = {} }
      local port = fake_port()
      local w = rt.new_worker(chain_plan(params), 1, port)
      w:on_end(0, true)
      assert.equal(0, #port.pushes)
      w:on_end(1, true)
      assert.equal("b closed", port.pushes[1].recs[1].value)
    end)
  end)

  describe("local exchange", function()
    -- a (thread 1) --key--> b[0] (thread 1: a direct call), b[1] (thread 2:
    -- channel 7); b[0] echoes to the sink over channel 5.
    local function local_plan()
      return {
        nodes = {
          [0] = node(0, "a", "echo"),
          [1] = node(1, "b", "echo", { parallelism = 2 }),
          [2] = sink(2, "out"),
        },
        instances = {
          [0] = { gid = 0, node = 0, index = 0, thread = 1,
                  outs = { { node = 1, grouping = "key", channels = { [1] = 7 },
                             direct = { [0] = 1 } } } },
          [1] = { gid = 1, node = 1, index = 0, thread = 1, chained_from = { 0 },
                  outs = { { node = 2, grouping = "shuffle", channels = { [0] = 5 } } } },
          [2] = { gid = 2, node = 1, index = 1, thread = 2, in_channels = { 7 },
                  outs = { { node = 2, grouping = "shuffle", channels = { [0] = 6 } } } },
          [3] = { gid = 3, node = 2, index = 0, thread = 0, in_channels = { 5, 6 } },
        },
      }
    end

    it("calls the instance on its own worker directly and encodes only the rest", function()
      local port = fake_port()
      local w = rt.new_worker(local_plan(), 1, port)
      assert.is_true(w:open())
      local recs = {}
      for i = 1, 200 do recs[i] = { "v" .. i, "k" .. i, i } end
      feed(w, 0, recs)
      local got = by_cid(port)
      assert.is_nil(got[6]) -- b[1] is not on this worker
      local seen = {}
      for cid, list in pairs(got) do
        for _, r in ipairs(list) do
          local inst = math.floor((testing.murmur3(r.key) % 128) * 2 / 128)
          -- b[0]'s output (channel 5) holds exactly b[0]'s keys; channel 7
          -- (to b[1]) exactly the others
          assert.equal(cid == 5 and 0 or 1, inst)
          assert.is_nil(seen[r.key])
          seen[r.key] = true
          assert.equal("v" .. r.key:sub(2), r.value)
        end
      end
      for i = 1, 200 do assert.is_true(seen["k" .. i]) end
      assert.is_true(#(got[5] or {}) > 0 and #(got[7] or {}) > 0)
      assert.equal(#got[5], w:stats(1).records_in)
    end)
  end)

  describe("operator to operator channels", function()
    -- a (thread 1) --key--> b (2 instances, on thread 2): channels 0, 1
    local function two_thread_plan()
      return {
        nodes = { [0] = node(0, "a", "echo"), [1] = node(1, "b", "echo", { parallelism = 2 }),
                  [2] = sink(2, "out") },
        instances = {
          [0] = { gid = 0, node = 0, index = 0, thread = 1,
                  outs = { { node = 1, grouping = "key", channels = { [0] = 0, [1] = 1 } } } },
          [1] = { gid = 1, node = 1, index = 0, thread = 2,
                  outs = { { node = 2, grouping = "shuffle", channels = { [0] = 2 } } } },
          [2] = { gid = 2, node = 1, index = 1, thread = 2,
                  outs = { { node = 2, grouping = "shuffle", channels = { [0] = 3 } } } },
          [3] = { gid = 3, node = 2, index = 0, thread = 0 },
        },
        channels = {
          [0] = { cid = 0, from = 0, to = 1, producer = 1, consumer = 2 },
          [1] = { cid = 1, from = 0, to = 2, producer = 1, consumer = 2 },
          [2] = { cid = 2, from = 1, to = 3, producer = 2, consumer = 0 },
          [3] = { cid = 3, from = 2, to = 3, producer = 2, consumer = 0 },
        },
      }
    end

    it("mark key == value with rt.SAME, which the consuming operator resolves", function()
      local p1, p2 = fake_port(), fake_port()
      local plan = two_thread_plan()
      local w1 = rt.new_worker(plan, 1, p1)
      local w2 = rt.new_worker(plan, 2, p2)
      feed(w1, 0, { { "w", "w", 1 }, { "v", "k", 2 }, { 5, 5, 3 }, { nil, nil, 4 } })
      -- on the wire: SAME in the key slot where the key was the value
      local b = buffer.new()
      local pushed = {}
      for _, p in ipairs(p1.pushes) do
        for _, r in ipairs(p.recs) do pushed[#pushed + 1] = { cid = p.cid, r = r } end
      end
      local same = 0
      for _, x in ipairs(pushed) do
        if x.r.key == rt.SAME then same = same + 1 end
      end
      assert.equal(2, same)
      -- through the consumers, keys are back
      for _, p in ipairs(p1.pushes) do
        b:reset()
        local flat = {}
        for i, r in ipairs(p.recs) do
          flat[3 * i - 2], flat[3 * i - 1], flat[3 * i] = r.value, r.key, r.time
        end
        b:encode(flat)
        local ptr, len = b:ref()
        w2:on_batch(p.cid == 0 and 1 or 2, ptr, len, p.nrec)
      end
      local got = {}
      for _, p in ipairs(p2.pushes) do
        for _, r in ipairs(p.recs) do got[r.time] = { r.value, r.key } end
      end
      assert.same({ [1] = { "w", "w" }, [2] = { "v", "k" }, [3] = { 5, 5 }, [4] = {} }, got)
      -- sinks never see SAME
      for _, p in ipairs(p2.pushes) do
        for _, r in ipairs(p.recs) do assert.are_not.equal(rt.SAME, r.key) end
      end
    end)
  end)

  describe("batches", function()
    it("flush at 1024 records, and the rest after the batch", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("fanout", "shuffle", 1), 1, port)
      feed(w, 0, { { 2500, "k", 3 } })
      assert.equal(3, #port.pushes)
      assert.same({ 1024, 1024, 452 }, { port.pushes[1].nrec, port.pushes[2].nrec, port.pushes[3].nrec })
      assert.equal(1, port.pushes[1].recs[1].value)
      assert.equal(1025, port.pushes[2].recs[1].value)
      assert.equal(2500, port.pushes[3].recs[452].value)
      assert.equal(3, port.pushes[3].recs[452].time)
      feed(w, 0, { { 10 } })
      assert.equal(10, port.pushes[4].nrec)
      assert.equal(rt.BATCH, 1024)
    end)

    it("derive the record count from the batch when nrec is not given", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("echo", "shuffle", 1), 1, port)
      feed(w, 0, { { nil, nil, 1 }, { "b", nil, 2 }, { nil, "k", 3 } }, false)
      assert.equal(3, w:stats(0).records_in)
      assert.equal(3, port.pushes[1].nrec)
    end)

    it("accept the payload as a string", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("echo", "shuffle", 1), 1, port)
      w:on_batch(0, buffer.encode({ "s", "k", 4 }), nil, 1)
      assert.same({ value = "s", key = "k", time = 4 }, port.pushes[1].recs[1])
    end)

    it("drop, count and log a record the codec cannot encode, and send the others", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("fanout", "shuffle", 1), 1, port)
      feed(w, 0, { { 1 }, { "fn" }, { 1 } })
      assert.equal(1, #port.pushes)
      assert.same({ 1, "after", 1 }, { port.pushes[1].recs[1].value, port.pushes[1].recs[2].value,
                                       port.pushes[1].recs[3].value })
      assert.equal(1, w:stats(0).errors)
      assert.matches("cannot encode emitted record", port.logs[1].msg, 1, true)
    end)
  end)

  describe("worker", function()
    it("hosts only the operator instances of its thread", function()
      local plan = {
        nodes = { [0] = { id = 0, name = "src", type = "source", kind = "generator", parallelism = 1 },
                  [1] = node(1, "a", "echo", { parallelism = 2 }), [2] = sink(2, "out") },
        instances = {
          [0] = { gid = 0, node = 0, index = 0, thread = 0 },
          [1] = { gid = 1, node = 1, index = 0, thread = 1, outs = {} },
          [2] = { gid = 2, node = 1, index = 1, thread = 2, outs = {} },
          [3] = { gid = 3, node = 2, index = 0, thread = 0 },
        },
        n_instances = 4,
      }
      local w1 = rt.new_worker(plan, 1, fake_port())
      local w2 = rt.new_worker(plan, 2, fake_port())
      assert.same({ 1 }, w1:gids())
      assert.same({ 2 }, w2:gids())
      assert.has_error(function() feed(w1, 2, { { 1 } }) end,
        "on_batch: instance 2 is not an operator on thread 1")
      assert.has_error(function() w1:stats(0) end)
    end)

    it("open reports the failing operator", function()
      local plan = fan_plan("open_fail", "shuffle", 1)
      plan.nodes[0].name = "x"
      local w = rt.new_worker(plan, 1, fake_port())
      local ok, err = w:open()
      assert.is_nil(ok)
      assert.equal("operator 'x' open: spec/fixtures/ops/open_fail.lua:3: cannot open", err)
    end)

    it("new_worker raises for a script without process", function()
      assert.has_error(function() rt.new_worker(fan_plan("no_process", "shuffle", 1), 1, fake_port()) end,
        "spec/fixtures/ops/no_process.lua: must return a table with process")
    end)

    it("on_end(closing = false) only flushes; closing = true runs close once", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("count", "shuffle", 1), 1, port)
      feed(w, 0, { { "a", "a" }, { "b", "b" } })
      assert.equal(-1, w:on_end(0, false))
      assert.equal(0, #port.pushes)
      w:on_end(0, true)
      assert.equal(1, #port.pushes)
      assert.equal(2, port.pushes[1].nrec)
      w:on_end(0, true)
      assert.equal(1, #port.pushes)
    end)

    it("on_error = stop: port.fail(4, msg) once, then nothing more is processed", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("errors", "shuffle", 1, { on_error = "stop" }), 1, port)
      feed(w, 0, { { "a" }, { "boom" }, { "b" } })
      feed(w, 0, { { "boom" }, { "c" } })
      assert.same({ { code = 4, msg = "operator a[0]: spec/fixtures/ops/errors.lua:5: boom" } }, port.fails)
      local got = by_cid(port)
      assert.equal(1, #got[0])
      assert.equal("a", got[0][1].value)
    end)

    it("on_error = skip with no dead-letter channel logs the error", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("errors", "shuffle", 1), 1, port)
      feed(w, 0, { { "boom", "key", 1 }, { "ok" } })
      assert.equal(1, w:stats(0).errors)
      assert.same({ level = 3, component = "operator a[0]",
                    msg = 'error: spec/fixtures/ops/errors.lua:5: boom key="key" value="boom"' },
                  port.logs[1])
    end)

    it("returns the next timer from on_batch and on_timer, -1 when none", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("timers", "shuffle", 1), 1, port)
      local plain = rt.new_worker(fan_plan("echo", "shuffle", 1), 1, fake_port())
      assert.equal(-1, feed(plain, 0, { { "x", "k", 0 } }))
      assert.equal(500, feed(w, 0, { { 500, "k" } }))
      assert.equal(500, feed(w, 0, { { 1000, "j" } }))
      assert.equal(500, w:on_timer(499))
      assert.equal(0, #port.pushes)
      assert.equal(1000, w:on_timer(500))
      assert.equal(1, #port.pushes)
      assert.equal(-1, w:on_timer(5000))
      local got = by_cid(port)[0]
      assert.same({ 500, 1000 }, { got[1].value.t, got[2].value.t })
    end)

    it("fires timers of several instances in time order", function()
      local port = fake_port()
      local plan = {
        nodes = { [0] = node(0, "t", "timers", { parallelism = 2 }), [1] = sink(1, "out") },
        instances = {
          [0] = { gid = 0, node = 0, index = 0, thread = 1,
                  outs = { { node = 1, grouping = "shuffle", channels = { [0] = 0 } } } },
          [1] = { gid = 1, node = 0, index = 1, thread = 1,
                  outs = { { node = 1, grouping = "shuffle", channels = { [0] = 1 } } } },
        },
      }
      local w = rt.new_worker(plan, 1, port)
      feed(w, 0, { { 300, "a" }, { 100, "b" } })
      feed(w, 1, { { 200, "c" }, { 50, "d" } })
      w:on_timer(1000)
      local order = {}
      -- both channels are flushed after on_timer; the time of each record says the order
      for _, p in ipairs(port.pushes) do
        for _, r in ipairs(p.recs) do order[#order + 1] = r.value.t end
      end
      table.sort(order)
      assert.same({ 50, 100, 200, 300 }, order)
      local g = by_cid(port)
      assert.same({ 100, 300 }, { g[0][1].value.t, g[0][2].value.t })
      assert.same({ 50, 200 }, { g[1][1].value.t, g[1][2].value.t })
    end)

    it("snapshot and restore an instance", function()
      local port = fake_port()
      local w = rt.new_worker(fan_plan("count", "shuffle", 1), 1, port)
      feed(w, 0, { { "a", "a" }, { "a", "a" }, { "z" } })
      local snap = w:snapshot(0)
      local w2 = rt.new_worker(fan_plan("count", "shuffle", 1), 1, fake_port())
      assert.is_true(w2:restore(0, snap))
      assert.same({ n = 2 }, w2:state(0, "a"))
      assert.same({ n = 1 }, w2:state(0, nil))
    end)
  end)

  describe("ffi_port", function()
    local function api_struct()
      rt.cdef()
      local calls = { push = {}, log = {}, fail = {} }
      local cbs = {
        push = ffi.cast("void (*)(void *, int32_t, const uint8_t *, size_t, uint32_t)",
          function(ctx, cid, data, len, nrec)
            calls.push[#calls.push + 1] = { ctx = tonumber(ffi.cast("intptr_t", ctx)), cid = cid,
                                            bytes = ffi.string(data, len), nrec = nrec }
          end),
        hash = ffi.cast("uint32_t (*)(const char *, size_t)",
          function(s, n) return testing.murmur3(ffi.string(s, n)) end),
        log = ffi.cast("void (*)(int, const char *, const char *)",
          function(level, c, m) calls.log[#calls.log + 1] = { level, ffi.string(c), ffi.string(m) } end),
        fail = ffi.cast("void (*)(void *, int, const char *)",
          function(ctx, code, m) calls.fail[#calls.fail + 1] = { code, ffi.string(m) } end),
        now_ms = ffi.cast("double (*)(void)", function() return 1234.5 end),
      }
      local api = ffi.new("sl_lua_api_t[1]")
      api[0].ctx = ffi.cast("void *", 77)
      api[0].push, api[0].hash, api[0].log, api[0].fail, api[0].now_ms =
        cbs.push, cbs.hash, cbs.log, cbs.fail, cbs.now_ms
      return api, calls, cbs
    end

    it("calls the C functions of sl_lua_api_t", function()
      local api, calls, cbs = api_struct()
      local port = rt.ffi_port(api)
      local b = buffer.new()
      b:encode({ "v", "k", 1 })
      port.push(3, b, 1)
      assert.equal(1, #calls.push)
      assert.same({ ctx = 77, cid = 3, bytes = buffer.encode({ "v", "k", 1 }), nrec = 1 }, calls.push[1])
      assert.equal(0x248bfa47, port.hash("hello"))
      port.log(2, "operator x[0]", "hi")
      assert.same({ { 2, "operator x[0]", "hi" } }, calls.log)
      port.fail(4, "stop")
      assert.same({ { 4, "stop" } }, calls.fail)
      assert.equal(1234.5, port.now())
      for _, cb in pairs(cbs) do cb:free() end
    end)

    it("runs a worker end to end over the FFI port", function()
      local api, calls, cbs = api_struct()
      local port = rt.ffi_port(api)
      local w = rt.new_worker(fan_plan("echo", "key", 2), 1, port)
      feed(w, 0, { { "x", "hello", 9 } })
      assert.equal(1, #calls.push)
      assert.equal(testing.route("hello", 2), calls.push[1].cid)
      assert.same({ "x", "hello", 9 }, buffer.decode(calls.push[1].bytes))
      for _, cb in pairs(cbs) do cb:free() end
    end)

    it("turns NULL functions into errors; declares the struct once", function()
      rt.cdef()
      rt.cdef()
      local api = ffi.new("sl_lua_api_t[1]")
      local port = rt.ffi_port(api)
      assert.has_error(function() port.push(0, buffer.new(), 0) end)
      assert.has_error(function() port.hash("x") end)
      assert.has_error(function() port.fail(4, "x") end)
      assert.has_error(function() port.now() end)
    end)
  end)
end)
