-- End to end: version, bounded runs (generator, stdin), close after the last
-- record, SIGINT/SIGTERM on unbounded sources (exit 0, close not run), a
-- failing open (exit 3), and `sluice test` on a user's spec.
local proc = require("support.proc")

local PASS = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
return op
]]

local TOTAL = [[
local op = {}
local n = 0
function op.process(ctx, v)
  n = n + 1
  ctx:emit(v)
end
function op.close(ctx)
  ctx:emit("total " .. n)
end
return op
]]

local MARKER = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
function op.close(ctx) ctx:emit("CLOSE-RAN") end
return op
]]

local UPPER = [[
local op = {}
function op.process(ctx, v) ctx:emit(v:upper()) end
return op
]]

local OPENFAIL = [[
local op = {}
function op.open(ctx)
  error("no database here")
end
function op.process(ctx, v) ctx:emit(v) end
return op
]]

local function range(a, b)
  local t = {}
  for i = a, b do t[#t + 1] = tostring(i) end
  return t
end

describe("e2e lifecycle", function()
  local dir, clients

  before_each(function()
    dir = proc.tmpdir()
    clients = {}
    proc.write_tree(dir, {
      ["pass.lua"] = PASS, ["total.lua"] = TOTAL, ["marker.lua"] = MARKER,
      ["upper.lua"] = UPPER, ["openfail.lua"] = OPENFAIL,
    })
  end)

  after_each(function()
    for _, c in ipairs(clients) do pcall(c.close, c) end
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function conf(text)
    return proc.write_file(dir .. "/p.conf", text)
  end

  local function stderr_of() return proc.read_file(dir .. "/stderr") or "" end

  it("version prints 'sluice X'", function()
    local code, out = proc.run({ proc.bin(), "version" }, 10)
    assert.are.equal(0, code)
    assert.is_truthy(out:match("^sluice %d+%.%d+[%w%.%-]*\n$"), out)
  end)

  it("--help, help and COMMAND --help print the help on stdout and exit 0", function()
    for _, args in ipairs({ { "--help" }, { "help" }, { "-h" }, { "run", "--help" },
                            { "check", "--help" }, { "run", "p.conf", "--help" } }) do
      local argv = { proc.bin() }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local code, out = proc.run(argv, 10)
      assert.are.equal(0, code, table.concat(args, " "))
      assert.truthy(out:find("usage: sluice run PIPELINE.conf", 1, true), out)
      assert.truthy(out:find("--restore latest|none|ID", 1, true), out)
    end
    -- a wrong command line is still an error (exit 1, usage on stderr)
    local code = proc.run({ proc.bin(), "frobnicate" }, 10)
    assert.are.equal(1, code)
  end)

  it("a null sink takes every record and writes nothing", function()
    local code, out, stderr = proc.run_sluice(conf([[
source   "gen"  { kind = "generator", count = 20000 }
operator "echo" { script = "pass.lua", from = "gen", parallelism = 2 }
sink     "none" { kind = "null", from = "echo" }
]]), { "--workers", "2" }, 60)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.are.equal("", out)
    assert.truthy(stderr:find("sink 'none': 20000 written, 0 errors", 1, true), stderr)
  end)

  it("generator count=10000 -> file: exits 0 with lines 1..10000", function()
    local code, _, stderr = proc.run_sluice(conf([[
source "gen" { kind = "generator", count = 10000 }
sink   "out" { kind = "file", path = "out.txt", from = "gen" }
]]), { "--workers", "2" }, 60)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.are.same(range(1, 10000), proc.file_lines(dir .. "/out.txt"))
  end)

  it("close runs after the last record and its emit reaches the sink", function()
    local code, _, stderr = proc.run_sluice(conf([[
source   "gen"   { kind = "generator", count = 5000 }
operator "total" { script = "total.lua", from = "gen" }
sink     "out"   { kind = "file", path = "out.txt", from = "total" }
]]), { "--workers", "2" }, 60)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    local want = range(1, 5000)
    want[#want + 1] = "total 5000"
    assert.are.same(want, proc.file_lines(dir .. "/out.txt"))
  end)

  it("stdin source -> op -> stdout sink", function()
    local input = {}
    local want = {}
    for i = 1, 2000 do
      input[i] = "line number " .. i .. " of stdin"
      want[i] = input[i]:upper()
    end
    proc.write_file(dir .. "/input.txt", table.concat(input, "\n") .. "\n")
    local code, out, stderr = proc.run({ proc.bin(), "run", conf([[
source   "in"  { kind = "stdin" }
operator "up"  { script = "upper.lua", from = "in" }
sink     "out" { kind = "stdout", from = "up" }
]]), "--workers", "2" }, 30, { stdin = dir .. "/input.txt" })
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.are.same(want, proc.lines(out))
  end)

  it("tcp source: SIGINT -> exit 0 within 5 s, close did not run", function()
    local port = proc.free_port()
    local pid = proc.start_sluice(conf(([[
source   "in"  { kind = "tcp", listen = "127.0.0.1:%d" }
operator "m"   { script = "marker.lua", from = "in", parallelism = 2 }
sink     "out" { kind = "file", path = "out.txt", from = "m" }
]]):format(port)), { "--workers", "2" })
    local c, err = proc.connect("127.0.0.1", port, 10, pid)
    assert.is_not_nil(c, tostring(err) .. "; stderr:\n" .. proc.tail(stderr_of()))
    clients[#clients + 1] = c
    local want = {}
    for i = 1, 50 do want[i] = "hello " .. i end
    assert(proc.send_all(c, table.concat(want, "\n") .. "\n"))
    assert.is_truthy(proc.wait_for(function()
      return #proc.file_lines(dir .. "/out.txt") >= 50
    end, 10, 0.05), "the 50 lines did not reach the file within 10 s")
    local t0 = proc.now()
    proc.kill(pid, "INT")
    local code = proc.wait(pid, 5)
    assert.are.equal(0, code, "exit after SIGINT (nil = still running after 5 s); stderr:\n" .. proc.tail(stderr_of()))
    assert.is_true(proc.now() - t0 < 5)
    assert.are.same(proc.sorted(want), proc.sorted(proc.file_lines(dir .. "/out.txt")))
  end)

  it("unbounded generator (no count): SIGTERM -> exit 0", function()
    local pid = proc.start_sluice(conf([[
source   "gen" { kind = "generator" }
operator "m"   { script = "marker.lua", from = "gen", parallelism = 2 }
sink     "out" { kind = "stdout", from = "m" }
]]), { "--workers", "2" }, { stdout = "/dev/null" })
    proc.sleep(1)
    assert.is_nil(proc.poll(pid), "an unbounded generator ended by itself: " ..
      tostring(proc.poll(pid)) .. "; stderr:\n" .. proc.tail(stderr_of()))
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 5)
    assert.are.equal(0, code, "exit after SIGTERM (nil = still running after 5 s); stderr:\n" .. proc.tail(stderr_of()))
  end)

  it("generator with a rate: SIGTERM -> exit 0, the file holds 1..n with no gap and no close", function()
    local pid = proc.start_sluice(conf([[
source   "gen" { kind = "generator", rate = 2000 }
operator "m"   { script = "marker.lua", from = "gen" }
sink     "out" { kind = "file", path = "out.txt", from = "m" }
]]), { "--workers", "2" })
    assert.is_truthy(proc.wait_for(function()
      return #proc.file_lines(dir .. "/out.txt") >= 100
    end, 10, 0.05), "no records within 10 s; stderr:\n" .. proc.tail(stderr_of()))
    proc.kill(pid, "TERM")
    local code = proc.wait(pid, 5)
    assert.are.equal(0, code, "exit after SIGTERM; stderr:\n" .. proc.tail(stderr_of()))
    local got = proc.file_lines(dir .. "/out.txt")
    assert.is_true(#got >= 100)
    assert.are.same(range(1, #got), got)
  end)

  it("a script whose open fails: run exits 3 naming the script", function()
    local code, out, stderr = proc.run_sluice(conf([[
source   "gen" { kind = "generator", count = 10 }
operator "op"  { script = "openfail.lua", from = "gen" }
sink     "out" { kind = "file", path = "out.txt", from = "op" }
]]), { "--workers", "2" }, 30)
    assert.are.equal(3, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.is_truthy((out .. stderr):find("openfail.lua", 1, true), "the script is named:\n" .. stderr)
    assert.is_truthy((out .. stderr):find("no database here", 1, true), "the error is shown:\n" .. stderr)
  end)

  describe("sluice test", function()
    local DOUBLE = [[
local op = {}
function op.process(ctx, v) ctx:emit(v * 2, ctx.key, ctx.time) end
return op
]]
    local function user_spec(want)
      return ([[
local testing = require("sluice.testing")
describe("double", function()
  it("doubles a number", function()
    local h = testing.operator("scripts/double.lua", { params = {} })
    h:push(21, "k", 1000)
    local e = h:emitted()
    assert.are.equal(1, #e)
    assert.are.equal(%d, e[1].value)
    assert.are.equal("k", e[1].key)
  end)
end)
]]):format(want)
    end

    -- the user's folder is outside the repo; LUA_PATH/LUA_CPATH are unset
    -- so that `sluice test` must put the harness on the path by itself
    local ENV = { LUA_PATH = false, LUA_CPATH = false }

    it("runs a passing user spec from a folder outside the repo: exit 0", function()
      proc.write_tree(dir, {
        ["user/scripts/double.lua"] = DOUBLE,
        ["user/spec/double_spec.lua"] = user_spec(42),
      })
      local code, out, err = proc.run({ proc.bin(), "test", "spec/double_spec.lua" }, 60,
        { cwd = dir .. "/user", env = ENV })
      assert.are.equal(0, code, "exit code; output:\n" .. out .. err)
      assert.is_truthy(out:find("1 success", 1, true), out)
    end)

    it("with no SPEC runs the folder's spec/ directory", function()
      proc.write_tree(dir, {
        ["user/scripts/double.lua"] = DOUBLE,
        ["user/spec/double_spec.lua"] = user_spec(42),
      })
      local code, out, err = proc.run({ proc.bin(), "test" }, 60, { cwd = dir .. "/user", env = ENV })
      assert.are.equal(0, code, "exit code; output:\n" .. out .. err)
      assert.is_truthy(out:find("1 success", 1, true), out)
    end)

    it("a failing user spec makes it exit non-zero", function()
      proc.write_tree(dir, {
        ["user/scripts/double.lua"] = DOUBLE,
        ["user/spec/double_spec.lua"] = user_spec(43),
      })
      local code, out, err = proc.run({ proc.bin(), "test", "spec/double_spec.lua" }, 60,
        { cwd = dir .. "/user", env = ENV })
      assert.is_number(code, "ended by " .. tostring(code) .. ":\n" .. out .. err)
      assert.are_not.equal(0, code, "exit code; output:\n" .. out .. err)
      assert.is_truthy(out:find("1 failure", 1, true), out .. err)
    end)
  end)
end)
