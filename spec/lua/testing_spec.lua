-- The Lua API of operator scripts, through the user's harness
-- (sluice.testing), which runs the server's own runtime (sluice.runtime).
-- Run from the repository root:
--   LUA_PATH="bindings/?.lua;;" busted --lua=luajit spec/lua/testing_spec.lua
local testing = require("sluice.testing")

local OPS = "spec/fixtures/ops/"

local function op(name, opts)
  return testing.operator(OPS .. name .. ".lua", opts)
end

local function values(records)
  local r = {}
  for i, rec in ipairs(records) do r[i] = rec.value end
  return r
end

describe("sluice.testing harness", function()
  it("reports its hash backend and agrees with the C vectors", function()
    assert.is_string(testing.backend)
    -- spec/c/test_hash.c's vectors
    assert.equal(0x00000000, testing.hash(""))
    assert.equal(0x3c2569b2, testing.hash("a"))
    assert.equal(0x9bbfd75f, testing.hash("ab"))
    assert.equal(0xb3dd93fa, testing.hash("abc"))
    assert.equal(0x43ed676a, testing.hash("abcd"))
    assert.equal(0x248bfa47, testing.hash("hello"))
    assert.equal(0xc0363e43, testing.hash("Hello, world!"))
    assert.equal(0x2e4ff723, testing.hash("The quick brown fox jumps over the lazy dog"))
    assert.equal(0xd2bef2dc, testing.hash("\255\254\253"))
    -- and the pure-Lua fallback is the same function
    assert.equal(0x2e4ff723, testing.murmur3("The quick brown fox jumps over the lazy dog"))
    assert.equal(0xd2bef2dc, testing.murmur3("\255\254\253"))
  end)

  it("routes keys like Flink: kg = hash % maxp, instance = kg * p // maxp", function()
    for _, k in ipairs({ "a", "hello", "", "zzz" }) do
      local kg = testing.hash(k) % 128
      assert.equal(math.floor(kg * 4 / 128), testing.route(k, 4))
    end
    assert.equal(testing.route("", 4), testing.route(nil, 4))
    assert.equal(testing.route("12", 4), testing.route(12, 4))
  end)

  describe("emit", function()
    it("defaults key to nil and time to the record's time", function()
      local h = op("emit_forms")
      h:push("value", "in-key", 123)
      assert.same({ { value = "v", key = nil, time = 123 } }, h:emitted())
    end)

    it("takes a key, and a key and a time", function()
      local h = op("emit_forms")
      h:push("key", nil, 5)
      h:push("time", nil, 5)
      assert.same({
        { value = "v", key = "k", time = 5 },
        { value = "v", key = "k", time = 7 },
      }, h:emitted())
    end)

    it("emits nil values", function()
      local h = op("emit_forms")
      h:push("nils", nil, 9)
      local out = h:emitted()
      assert.equal(1, #out)
      assert.is_nil(out[1].value)
      assert.is_nil(out[1].key)
      assert.equal(9, out[1].time)
    end)

    it("emits several records per input, in order", function()
      local h = op("emit_forms")
      h:push("two", nil, 1)
      assert.same({ { value = 1, key = "a", time = 1 }, { value = 2, key = "b", time = 20 } }, h:emitted())
    end)

    it("rejects a time that is not a number, as an error of the record", function()
      local h = op("emit_forms", { on_error = "skip" })
      h:push("badtime", nil, 1)
      assert.same({}, h:emitted())
      assert.equal(1, h:errors())
      assert.matches("emit_forms.lua:16: ctx:emit: time must be a number", h:logs()[1].msg, 1, true)
    end)

    it("emitted() returns only what is new", function()
      local h = op("echo")
      h:push("a")
      assert.equal(1, #h:emitted())
      assert.same({}, h:emitted())
      h:push("b")
      assert.same({ "b" }, values(h:emitted()))
    end)
  end)

  describe("push", function()
    it("uses the harness clock as the default time", function()
      local h = op("echo")
      h:push("a")
      h:advance(250)
      h:push("b", "k")
      assert.same({
        { value = "a", key = nil, time = 0 },
        { value = "b", key = "k", time = 250 },
      }, h:emitted())
    end)

    it("round-trips every kind of value through the codec", function()
      local h = op("echo")
      local nested = { a = { b = { 1, 2, 3 } }, [1] = "x", flag = false, n = -0.5, s = "\0bin\255" }
      local cases = { true, false, 0, 1.5, -3, 2 ^ 40, "", "str", nested, {} }
      for _, v in ipairs(cases) do h:push(v, "k", 1) end
      h:push(nil, "k", 1)
      local out = h:emitted()
      assert.equal(#cases + 1, #out)
      for i, v in ipairs(cases) do assert.same(v, out[i].value) end
      assert.is_nil(out[#out].value)
      -- a copy, not the pushed table: it went through string.buffer
      assert.are_not.equal(nested, out[9].value)
    end)

    it("round-trips keys of every scalar kind", function()
      local h = op("echo")
      h:push("v", 42, 1)
      h:push("v", true, 1)
      h:push("v", "s", 1)
      local out = h:emitted()
      assert.equal(42, out[1].key)
      assert.equal(true, out[2].key)
      assert.equal("s", out[3].key)
    end)

    it("fails loudly on values the codec cannot carry", function()
      local h = op("echo")
      assert.has_error(function() h:push(function() end) end)
    end)

    it("push_batch sends one encoded batch", function()
      local h = op("echo")
      h:push_batch({ { "a", "k", 1 }, { "b", nil, 2 }, { nil, "x" } })
      assert.same({
        { value = "a", key = "k", time = 1 },
        { value = "b", key = nil, time = 2 },
        { value = nil, key = "x", time = 0 },
      }, h:emitted())
    end)
  end)

  describe("ctx", function()
    it("gives params, instance, parallelism and name", function()
      local h = op("ctxinfo", { params = { x = 1, list = { "a" } }, parallelism = 4, instance = 2 })
      h:push("v", "k", 77)
      local v = h:emitted()[1].value
      assert.same({ x = 1, list = { "a" } }, v.params)
      assert.equal(2, v.instance)
      assert.equal(4, v.parallelism)
      assert.equal("ctxinfo", v.name)
      assert.equal("k", v.key)
      assert.equal(77, v.time)
      assert.equal("v", v.value)
    end)

    it("defaults to instance 0 of 1 and empty params", function()
      local h = op("ctxinfo", { name = "custom" })
      h:push(1)
      local v = h:emitted()[1].value
      assert.same({}, v.params)
      assert.equal(0, v.instance)
      assert.equal(1, v.parallelism)
      assert.equal("custom", v.name)
      assert.is_nil(v.key)
    end)

    it("refuses an instance outside the parallelism", function()
      assert.has_error(function() op("echo", { parallelism = 2, instance = 2 }) end)
    end)

    it("logs at a level with the values joined by spaces", function()
      local h = op("logger")
      h:push("warn")
      h:push("debug")
      local logs = h:logs()
      assert.equal(2, #logs)
      assert.same({ level = 2, component = "operator logger[0]", msg = "value warn 1.5 nil true" }, logs[1])
      assert.equal(0, logs[2].level)
    end)

    it("rejects an unknown log level as an error of the record", function()
      local h = op("logger", { on_error = "skip" })
      h:push("loud")
      assert.equal(1, h:errors())
      assert.matches("unknown level 'loud'", h:logs()[1].msg, 1, true)
    end)
  end)

  describe("state", function()
    it("keeps one table per key", function()
      local h = op("count")
      h:push("a", "a")
      h:push("b", "b")
      h:push("a", "a")
      assert.same({ n = 2 }, h:state("a"))
      assert.same({ n = 1 }, h:state("b"))
      assert.is_nil(h:state("c"))
    end)

    it("keeps the nil key's state apart", function()
      local h = op("count")
      h:push("x")
      h:push("y")
      assert.same({ n = 2 }, h:state(nil))
    end)

    it("creates no state for a stateless operator", function()
      local h = op("echo")
      h:push("a", "a")
      assert.is_nil(h:state("a"))
      local snap = require("string.buffer").decode(h:checkpoint())
      assert.same({}, snap.states)
    end)

    it("tells number keys from string keys", function()
      local h = op("count")
      h:push("a", 1)
      h:push("a", "1")
      h:push("a", 1)
      assert.same({ n = 2 }, h:state(1))
      assert.same({ n = 1 }, h:state("1"))
    end)

    it("each_state visits every key; close emits totals", function()
      local h = op("count")
      for _, w in ipairs({ "a", "b", "a", "c", "a" }) do h:push(w, w, 10) end
      assert.same({}, h:emitted())
      local out = h:close()
      table.sort(out, function(x, y) return x.value < y.value end)
      assert.same({
        { value = "a 3", key = "a", time = 0 },
        { value = "b 1", key = "b", time = 0 },
        { value = "c 1", key = "c", time = 0 },
      }, out)
    end)

    it("clear_state drops the current key's state", function()
      local h = op("clear")
      h:push("x", "k")
      assert.same({ v = "x" }, h:state("k"))
      h:push("clear", "k")
      assert.is_nil(h:state("k"))
      h:push("y", "k")
      assert.same({ v = "y" }, h:state("k"))
    end)
  end)

  describe("open and close", function()
    it("runs open once, before the first record, with no key", function()
      local h = op("lifecycle")
      h:push("a", "k1")
      h:push("b", "k2")
      assert.same({ "open 1 nil" }, values(h:emitted()))
    end)

    it("runs close with ctx.key = nil and the clock as time", function()
      local h = op("lifecycle")
      h:push("a", "k2")
      h:push("b", "k1")
      h:advance(500)
      h:emitted()
      assert.same({ { value = "close nil k1,k2", key = nil, time = 500 } }, h:close())
    end)

    it("reports an open error with the operator and FILE:LINE", function()
      local h = op("open_fail")
      assert.has_error(function() h:push("x") end,
        "operator 'open_fail' open: spec/fixtures/ops/open_fail.lua:3: cannot open")
    end)

    it("routes a close error like a record's", function()
      local h = op("close_fail")
      h:push("x")
      h:close()
      assert.equal(1, h:errors())
      local d = h:dead_letters()
      assert.equal(1, #d)
      assert.equal("spec/fixtures/ops/close_fail.lua:4: close failed", d[1].value.error)
    end)

    it("refuses a script that does not return a table with process", function()
      assert.has_error(function() op("no_process") end,
        "spec/fixtures/ops/no_process.lua: must return a table with process")
    end)

    it("reports a syntax error with FILE:LINE", function()
      local ok, err = pcall(op, "syntax_error")
      assert.is_false(ok)
      assert.matches("^spec/fixtures/ops/syntax_error%.lua:4:", err)
    end)

    it("refuses a missing script", function()
      local ok, err = pcall(op, "does_not_exist")
      assert.is_false(ok)
      assert.matches("does_not_exist.lua", err, 1, true)
    end)
  end)

  describe("timers", function()
    it("fire when the clock reaches them, with ctx.key, ctx.time = t and the key's state", function()
      local h = op("timers", { params = { delay = 1000 } })
      h:push("a", "k", 0)
      h:advance(999)
      assert.same({}, h:emitted())
      h:advance(1)
      assert.same({ { value = { key = "k", t = 1000, time = 1000, n = 1 }, key = "k", time = 1000 } },
        h:emitted())
      h:advance(5000)
      assert.same({}, h:emitted())
    end)

    it("fire in time order across keys", function()
      local h = op("timers")
      h:push(300, "c")
      h:push(100, "a")
      h:push(200, "b")
      h:push(150, nil)
      h:advance(1000)
      local got = {}
      for i, r in ipairs(h:emitted()) do got[i] = { r.value.t, r.value.key } end
      assert.same({ { 100, "a" }, { 150, nil }, { 200, "b" }, { 300, "c" } }, got)
    end)

    it("fire only the due ones", function()
      local h = op("timers")
      h:push(100, "a")
      h:push(200, "b")
      h:advance(150)
      assert.equal(1, #h:emitted())
      h:advance(50)
      assert.equal(1, #h:emitted())
    end)

    it("dedupe the same key and time, not different keys or times", function()
      local h = op("timers", { params = { delay = 10 } })
      h:push("twice", "k", 0)  -- twice at 10
      h:push("x", "k", 0)      -- again at 10
      h:push("x", "j", 0)      -- other key at 10
      h:push("x", "k", 5)      -- k at 15
      h:advance(100)
      local got = {}
      for i, r in ipairs(h:emitted()) do got[i] = r.value.key .. "@" .. r.value.t end
      assert.same({ "k@10", "j@10", "k@15" }, got)
    end)

    it("may set timers from a timer; the due ones fire in the same advance", function()
      local h = op("timers", { params = { rearm = 400 } })
      h:push(100, "k")
      h:advance(1000)
      local got = {}
      for i, r in ipairs(h:emitted()) do got[i] = r.value.t end
      assert.same({ 100, 200, 300, 400 }, got)
    end)

    it("refuses ctx:timer without op.timer and event-time timers", function()
      local h = testing.operator(OPS .. "count.lua")
      -- count has no op.timer: check through the runtime directly
      h:open()
      local ctx = h.w.insts[1].ctx
      assert.has_error(function() ctx:timer(5) end, "ctx:timer: the operator has no timer function (op.timer)")
      local t = op("timers")
      t:open()
      local tctx = t.w.insts[1].ctx
      assert.has_error(function() tctx:timer(5, "event") end,
        "ctx:timer: 'event' timers are not supported yet (processing time only)")
      assert.has_error(function() tctx:timer("5") end, "ctx:timer: time must be a number (ms)")
    end)

    it("are dropped after close", function()
      local h = op("timers")
      h:push(100, "k")
      h:close()
      h:advance(1000)
      assert.same({}, h:emitted())
    end)

    it("route timer errors like record errors", function()
      local h = op("errors", { on_error = "dead_letter" })
      h:open()
      local ctx = h.w.insts[1].ctx
      ctx.key = "tk"
      ctx:timer(50)
      h:advance(60)
      local d = h:dead_letters()
      assert.equal(1, #d)
      assert.same({ operator = "errors", error = "spec/fixtures/ops/errors.lua:15: timer failed",
                    key = "tk", time = 50 }, d[1].value)
    end)
  end)

  describe("errors", function()
    it("dead_letter: a table {operator, error (FILE:LINE), value, key, time}", function()
      local h = op("errors")   -- the harness default is dead_letter
      h:push("ok1", "k", 1)
      h:push("boom", "k", 5)
      h:push("ok2", "k", 6)
      assert.same({ "ok1", "ok2" }, values(h:emitted()))
      local d = h:dead_letters()
      assert.same({ {
        value = { operator = "errors", error = "spec/fixtures/ops/errors.lua:5: boom",
                  value = "boom", key = "k", time = 5 },
        key = "k", time = 5,
      } }, d)
      assert.equal(1, h:errors())
      assert.equal(1, h:stats().dead_letters)
      assert.same({}, h:dead_letters())
    end)

    it("dead_letter carries Lua's own runtime errors and table values", function()
      local h = op("errors")
      h:push("index", nil, 3)
      h:push("table", { 1 }, 4)
      local d = h:dead_letters()
      assert.equal(2, #d)
      assert.matches("^spec/fixtures/ops/errors%.lua:8: attempt to index", d[1].value.error)
      assert.is_nil(d[1].value.key)
      assert.matches("^table: ", d[2].value.error)
      assert.same({ 1 }, d[2].key)
    end)

    it("skip: counted and logged, nothing sent", function()
      local h = op("errors", { on_error = "skip" })
      h:push("boom", "kk", 5)
      h:push("fine", "kk", 6)
      assert.same({ "fine" }, values(h:emitted()))
      assert.same({}, h:dead_letters())
      assert.equal(1, h:errors())
      assert.same({
        level = 3, component = "operator errors[0]",
        msg = 'error: spec/fixtures/ops/errors.lua:5: boom key="kk" value="boom"',
      }, h:logs()[1])
    end)

    it("stop: fails the pipeline with code 4 and processes nothing more", function()
      local h = op("errors", { on_error = "stop" })
      h:push("a")
      h:push("boom", "k")
      h:push("b")
      assert.same({ "a" }, values(h:emitted()))
      local msg, code = h:failed()
      assert.equal(4, code)
      assert.equal("operator errors[0]: spec/fixtures/ops/errors.lua:5: boom", msg)
      assert.equal(1, h:errors())
      assert.same({}, h:dead_letters())
    end)

    it("errors in the middle of one batch do not lose the other records", function()
      local h = op("errors")
      h:push_batch({ { "a" }, { "boom" }, { "b" }, { "index" }, { "c" } })
      assert.same({ "a", "b", "c" }, values(h:emitted()))
      assert.equal(2, #h:dead_letters())
      assert.same({ records_in = 5, records_out = 3, errors = 2, dead_letters = 2 }, h:stats())
    end)
  end)

  describe("sandbox", function()
    local function probe(h, name)
      h:push(name, name)
      local out = h:emitted()
      return out[#out].value
    end

    it("denies io, os.execute, os.getenv, require of other modules, ffi, load*", function()
      local h = op("sandbox")
      assert.equal("nil", probe(h, "io"))
      assert.equal("nil", probe(h, "os_execute"))
      assert.equal("nil", probe(h, "os_getenv"))
      assert.matches("require 'x' is not allowed", probe(h, "require_x"), 1, true)
      assert.matches("require 'ffi' is not allowed", probe(h, "require_ffi"), 1, true)
      assert.matches("require 'os' is not allowed", probe(h, "require_os"), 1, true)
      assert.equal("nil", probe(h, "ffi_global"))
      assert.equal("nil", probe(h, "loadstring"))
      assert.equal("nil", probe(h, "load"))
      assert.equal("nil", probe(h, "dofile"))
      assert.equal("nil", probe(h, "setfenv"))
      assert.equal("nil", probe(h, "debug"))
      assert.equal("nil", probe(h, "jit"))
    end)

    it("gives the safe libraries", function()
      local h = op("sandbox")
      assert.equal("function", probe(h, "os_time"))
      assert.equal("function", probe(h, "os_clock"))
      assert.equal("function", probe(h, "os_date"))
      assert.equal("function", probe(h, "require_buffer"))
      assert.equal("function", probe(h, "require_table_new"))
      assert.equal("function", probe(h, "require_bit"))
      assert.equal("function function", probe(h, "table_new"))
      assert.equal("7xx", probe(h, "string"))
      assert.equal("2", probe(h, "math"))
      assert.equal("2", probe(h, "bit"))
      assert.equal("function", probe(h, "coroutine"))
    end)

    it("print logs at info", function()
      local h = op("sandbox")
      assert.equal("printed", probe(h, "print"))
      assert.same({ level = 1, component = "operator sandbox[0]", msg = "hello 1 nil" }, h:logs()[1])
    end)

    it("keeps globals and library tables per instance", function()
      local a, b = op("sandbox"), op("sandbox")
      assert.equal("true", probe(a, "global_write"))
      assert.equal("true", probe(a, "global_read"))
      assert.equal("nil", probe(b, "global_read"))
      assert.equal("nil", tostring(rawget(_G, "leaked")))
      assert.equal("function", probe(a, "string_mutation"))
      assert.is_function(string.upper)
    end)

    it("allow grants io, os, ffi and require", function()
      local h = op("sandbox", { allow = { io = true, os = true, ffi = true, require = true } })
      assert.equal("table", probe(h, "io"))
      assert.equal("function", probe(h, "os_execute"))
      assert.equal("function", probe(h, "os_getenv"))
      assert.equal("function", probe(h, "require_ffi"))
      assert.equal("function", probe(h, "require_os"))
      assert.equal("table", probe(h, "ffi_global"))
    end)

    it("allow.ffi alone grants require('ffi') only", function()
      local h = op("sandbox", { allow = { ffi = true } })
      assert.equal("function", probe(h, "require_ffi"))
      assert.matches("require 'os' is not allowed", probe(h, "require_os"), 1, true)
      assert.equal("nil", probe(h, "io"))
    end)
  end)

  describe("jit = false", function()
    it("runs the script in the interpreter", function()
      local jutil = require("jit.util")
      local function traces_in(h)
        local proto = h.w.insts[1].process
        local n = 0
        jit.attach(function(what, tr, func)
          if what == "start" and jutil.funcinfo(func).source == jutil.funcinfo(proto).source then
            n = n + 1
          end
        end, "trace")
        for i = 1, 300 do h:push(i) end
        jit.attach(function() end)
        jit.flush()
        return n
      end
      jit.flush()
      local on = op("jitoff")
      local n_on = traces_in(on)
      local off = op("jitoff", { jit = false })
      local n_off = traces_in(off)
      assert.equal(0, n_off)
      assert.is_true(n_on > 0)
      assert.equal(20100, off:emitted()[1].value)
    end)
  end)

  describe("checkpoint and restore", function()
    it("round-trips keyed state, the nil key's state and timers", function()
      local h = op("timers", { params = { delay = 100 } })
      h:push("x", "a", 0)
      h:push("x", "a", 10)
      h:push("x", "b", 50)
      h:push("x", nil, 70)
      local snap = h:checkpoint()
      assert.is_string(snap)

      local r = op("timers", { params = { delay = 100 } }):restore(snap)
      assert.same({ n = 2 }, r:state("a"))
      assert.same({ n = 1 }, r:state("b"))
      assert.same({ n = 1 }, r:state(nil))
      r:push("x", "a", 20)   -- a at 120
      assert.same({ n = 3 }, r:state("a"))
      r:advance(1000)
      local got = {}
      for i, rec in ipairs(r:emitted()) do got[i] = tostring(rec.value.key) .. "@" .. rec.value.t end
      assert.same({ "a@100", "a@110", "a@120", "b@150", "nil@170" }, got)
      -- the original is untouched by the restored copy
      assert.same({ n = 2 }, h:state("a"))
    end)

    it("restore runs before open, as after a server restart", function()
      local h = op("lifecycle")
      h:push("x", "k")
      local r = op("lifecycle"):restore(h:checkpoint())
      assert.same({ n = 1 }, r:state("k"))
      assert.same({ "open 1 nil" }, values(r:emitted()))
      assert.same("close nil k", r:close()[1].value)
    end)

    it("refuses bytes that are not a snapshot", function()
      local h = op("count")
      assert.has_error(function() h:restore("garbage") end)
      assert.has_error(function() h:restore(require("string.buffer").encode({ 1, 2 })) end)
    end)
  end)
end)
