-- End to end: `sluice check` and `sluice run` on bad confs print
-- "FILE:LINE: message" with the exact line and exit 1; run creates no output.
local proc = require("support.proc")

local OP = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
return op
]]

-- the error is on line 3 of the script
local BAD_SCRIPT = [[
local op = {}
function op.process(ctx, v)
  local x = = 1
end
return op
]]

-- name -> { conf text, line (in the conf), pattern the message must match too }
local CASES = {
  {
    name = "unknown field",
    line = 5, match = "colour",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "op" {
  script = "op.lua",
  from = "a",
  colour = "red",
}
sink "b" { kind = "file", path = "out.txt", from = "op" }
]],
  },
  {
    name = "unknown source kind",
    line = 3, match = "kafka",
    conf = [[
source "a" {
  path = "x",
  kind = "kafka",
}
sink "b" { kind = "file", path = "out.txt", from = "a" }
]],
  },
  {
    name = "unknown sink kind",
    line = 4, match = "s3",
    conf = [[
source "a" { kind = "generator", count = 3 }
sink "b" {
  from = "a",
  kind = "s3",
}
sink "c" { kind = "file", path = "out.txt", from = "a" }
]],
  },
  {
    name = "missing input",
    line = 5, match = "nope",
    conf = [[
source "a" { kind = "generator", count = 3 }

operator "op" {
  script = "op.lua",
  from = { "a", "nope" },
}
sink "b" { kind = "file", path = "out.txt", from = "op" }
]],
  },
  {
    name = "cycle through itself",
    line = 4, match = "cycle",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "self" {
  script = "op.lua",
  from = { "a", "self" },
}
sink "b" { kind = "file", path = "out.txt", from = "self" }
]],
  },
  {
    name = "cycle of two operators",
    lines = { 2, 3 }, match = "cycle",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "x" { script = "op.lua", from = { "a", "y" } }
operator "y" { script = "op.lua", from = "x" }
sink "b" { kind = "file", path = "out.txt", from = "y" }
]],
  },
  {
    name = "duplicate name",
    line = 4, match = "dup",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "dup" { script = "op.lua", from = "a" }

sink "dup" { kind = "file", path = "out.txt", from = "a" }
]],
  },
  {
    name = "bad value type",
    line = 4, match = "parallelism",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "op" {
  script = "op.lua",
  parallelism = "two",
  from = "a",
}
sink "b" { kind = "file", path = "out.txt", from = "op" }
]],
  },
  {
    name = "exactly_once into a null sink (it does not commit)",
    line = 1, match = "sink 'b' (null) does not commit",
    conf = [[
pipeline "p" { guarantee = "exactly_once", checkpoint = { every = "1s" } }
source "a" { kind = "generator", count = 3 }
sink "b" { kind = "null", from = "a" }
]],
  },
  {
    name = "a null sink takes no path",
    line = 2, match = "field 'path' does not apply to kind 'null'",
    conf = [[
source "a" { kind = "generator", count = 3 }
sink "b" { kind = "null", from = "a", path = "x" }
]],
  },
  {
    name = "bad on_error value",
    line = 3, match = "on_error",
    conf = [[
source "a" { kind = "generator", count = 3 }
operator "op" { script = "op.lua", from = "a",
  on_error = "ignore" }
sink "b" { kind = "file", path = "out.txt", from = "op" }
]],
  },
}

describe("e2e check", function()
  local dir

  before_each(function()
    dir = proc.tmpdir()
    proc.write_tree(dir, { ["op.lua"] = OP, ["bad.lua"] = BAD_SCRIPT })
  end)

  after_each(function()
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  -- the "FILE:LINE: message" lines of an output
  local function error_lines(out, file)
    local found = {}
    for _, l in ipairs(proc.lines(out)) do
      local n, msg = l:match("^" .. proc.pesc(file) .. ":(%d+): (.*)$")
      if n then found[#found + 1] = { line = tonumber(n), msg = msg, text = l } end
    end
    return found
  end

  local function expect_error(out, file, c)
    local found = error_lines(out, file)
    assert.is_true(#found >= 1, "no line '" .. file .. ":LINE: ...' in:\n" .. out)
    local ok = false
    for _, f in ipairs(found) do
      local line_ok = c.line and f.line == c.line
      if c.lines then
        for _, l in ipairs(c.lines) do line_ok = line_ok or f.line == l end
      end
      if line_ok and (not c.match or f.msg:find(c.match, 1, true)) then ok = true end
    end
    assert.is_true(ok, ("expected %s:%s: ...%s... in:\n%s"):format(file,
      c.line or table.concat(c.lines, "|"), c.match or "", out))
  end

  for _, c in ipairs(CASES) do
    it("check: " .. c.name .. " -> exit 1 with CONF:LINE", function()
      local conf = proc.write_file(dir .. "/bad.conf", c.conf)
      local code, out, err = proc.run({ proc.bin(), "check", conf }, 20)
      assert.are.equal(1, code, "exit code; output:\n" .. out .. err)
      expect_error(out .. err, conf, c)
    end)

    it("run: " .. c.name .. " -> exit 1, no output file", function()
      local conf = proc.write_file(dir .. "/bad.conf", c.conf)
      local code, out, err = proc.run({ proc.bin(), "run", conf }, 20)
      assert.are.equal(1, code, "exit code; output:\n" .. out .. err)
      expect_error(out .. err, conf, c)
      assert.is_false(proc.exists(dir .. "/out.txt"), "run created the output file")
    end)
  end

  local BAD_SCRIPT_CONF = [[
source "a" { kind = "generator", count = 3 }
operator "op" { script = "bad.lua", from = "a" }
sink "b" { kind = "file", path = "out.txt", from = "op" }
]]

  for _, cmd in ipairs({ "check", "run" }) do
    it(cmd .. ": a script that does not compile -> exit 1 with SCRIPT:LINE", function()
      local conf = proc.write_file(dir .. "/bad.conf", BAD_SCRIPT_CONF)
      local code, out, err = proc.run({ proc.bin(), cmd, conf }, 20)
      assert.are.equal(1, code, "exit code; output:\n" .. out .. err)
      expect_error(out .. err, dir .. "/bad.lua", { line = 3 })
      assert.is_false(proc.exists(dir .. "/out.txt"), cmd .. " created the output file")
    end)
  end

  it("check: a good conf -> exit 0", function()
    local conf = proc.write_file(dir .. "/good.conf", [[
pipeline "good" { workers = 2 }
source   "a"  { kind = "generator", count = 3 }
operator "op" { script = "op.lua", from = "a", parallelism = 2, on_error = "skip",
                params = { n = 1 } }
sink     "b"  { kind = "file", path = "out.txt", from = "op" }
]])
    local code, out, err = proc.run({ proc.bin(), "check", conf }, 20)
    assert.are.equal(0, code, "exit code; output:\n" .. out .. err)
    assert.is_false(proc.exists(dir .. "/out.txt"), "check created the output file")
  end)

  it("check: a conf file that does not exist -> exit 1", function()
    local code, out, err = proc.run({ proc.bin(), "check", dir .. "/nope.conf" }, 20)
    assert.are.equal(1, code, "exit code; output:\n" .. out .. err)
  end)
end)
