-- End to end: the log (stderr): one line per event with time, level and
-- component; --log-level filters; --log-format json gives one JSON object
-- per line.
local proc = require("support.proc")
local json = require("dkjson")

local CONF = [[
source "g" { kind = "generator", count = 100 }
sink "out" { kind = "file", path = "out.txt", from = "g" }
]]

describe("e2e logs", function()
  local dir
  before_each(function()
    dir = proc.tmpdir()
    proc.write_file(dir .. "/p.conf", CONF)
  end)
  after_each(function() proc.rm_rf(dir) end)

  it("text lines carry time, level and component", function()
    local code, _, err = proc.run_sluice(dir .. "/p.conf", {}, 30)
    assert.are.equal(0, code, err)
    for _, l in ipairs(proc.lines(err)) do
      assert.is_truthy(l:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %u+ [%w_]+: "), l)
    end
  end)

  it("--log-format json: one object per line with time, level, component, msg", function()
    local code, _, err = proc.run_sluice(dir .. "/p.conf", { "--log-format", "json" }, 30)
    assert.are.equal(0, code, err)
    local n = 0
    for _, l in ipairs(proc.lines(err)) do
      local o = json.decode(l)
      assert.is_table(o, l)
      assert.is_truthy(o.time:match("^%d%d%d%d%-%d%d%-%d%dT"), l)
      assert.is_truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[o.level], l)
      assert.is_string(o.component)
      assert.is_string(o.msg)
      n = n + 1
    end
    assert.is_true(n > 3)
  end)

  it("on a terminal a live status line shows rates and the share read; not otherwise", function()
    proc.write_file(dir .. "/slow.conf", [[
source "g" { kind = "generator", count = 3000, rate = 2000 }
sink "out" { kind = "file", path = "out.txt", from = "g" }
]])
    -- script(1) runs sluice on a pseudo-terminal and records what it wrote
    local cmd = string.format("script -qfec %q %q >/dev/null 2>&1",
      proc.bin() .. " run " .. dir .. "/slow.conf", dir .. "/tty.out")
    assert.is_true(os.execute(cmd) == 0)
    local tty = proc.read_file(dir .. "/tty.out") or ""
    assert.is_truthy(tty:match("\r\27%[K%d+ rec/s in, %d+ rec/s out, [%d%.]+%% read"), tty)
    local code, _, err = proc.run_sluice(dir .. "/slow.conf", {}, 30)
    assert.are.equal(0, code, err)
    assert.is_falsy(err:match("rec/s"), err)
  end)

  it("--log-level warn keeps info lines out; a bad --log-format is a usage error", function()
    local code, _, err = proc.run_sluice(dir .. "/p.conf", { "--log-level", "warn" }, 30)
    assert.are.equal(0, code, err)
    assert.is_falsy(err:match(" INFO "), err)
    code = proc.run_sluice(dir .. "/p.conf", { "--log-format", "xml" }, 30)
    assert.are.equal(1, code)
  end)
end)
