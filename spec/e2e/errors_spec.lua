-- End to end: on_error = skip | dead_letter | stop for an operator that
-- raises a Lua error on every record containing "bad".
local proc = require("support.proc")
local json = require("dkjson")

-- line 4 raises
local PICKY = [[
local op = {}
function op.process(ctx, v)
  if v:find("bad", 1, true) then
    error("cannot take " .. v)
  end
  ctx:emit(v, ctx.key, ctx.time)
end
return op
]]

local KEYER = [[
local op = {}
function op.process(ctx, v) ctx:emit(v, "key-" .. v, ctx.time) end
return op
]]

local N = 300
local function data()
  local all, good, bad = {}, {}, {}
  for i = 1, N do
    local l
    if i % 7 == 0 then
      l = "bad-" .. i
      bad[#bad + 1] = l
    else
      l = "good-" .. i
      good[#good + 1] = l
    end
    all[#all + 1] = l
  end
  return table.concat(all, "\n") .. "\n", good, bad
end

describe("e2e errors", function()
  local dir, text, good, bad

  setup(function() text, good, bad = data() end)

  before_each(function()
    dir = proc.tmpdir()
    proc.write_tree(dir, { ["picky.lua"] = PICKY, ["keyer.lua"] = KEYER, ["data.txt"] = text })
  end)

  after_each(function()
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function run(conf_text, timeout)
    local conf = proc.write_file(dir .. "/p.conf", conf_text)
    return proc.run_sluice(conf, { "--workers", "2" }, timeout or 60)
  end

  it("skip: the output holds exactly the good records; each error is logged", function()
    local code, _, stderr = run([[
source   "in"    { kind = "file", path = "data.txt" }
operator "picky" { script = "picky.lua", from = "in", parallelism = 2, on_error = "skip" }
sink     "out"   { kind = "file", path = "out.txt", from = "picky" }
]])
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.are.same(proc.sorted(good), proc.sorted(proc.file_lines(dir .. "/out.txt")))
    local logl = proc.lines(stderr)
    for _, b in ipairs(bad) do
      local found
      for _, l in ipairs(logl) do
        if l:find("picky", 1, true) and l:find("cannot take " .. b, 1, true) then found = l end
      end
      assert.is_not_nil(found, "no log line naming operator 'picky' and 'cannot take " .. b .. "' in:\n" ..
        proc.tail(stderr))
    end
  end)

  it("dead_letter: the dead sink holds exactly the bad records as JSON lines", function()
    local code, _, stderr = run([[
source   "in"    { kind = "file", path = "data.txt" }
operator "keyer" { script = "keyer.lua", from = "in" }
operator "picky" {
  script = "picky.lua", from = "keyer", grouping = "key", parallelism = 2,
  on_error = "dead_letter", dead_letter = "dead",
}
sink     "out"   { kind = "file", path = "out.txt", from = "picky" }
sink     "dead"  { kind = "file", path = "dead.jsonl" }
]])
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.are.same(proc.sorted(good), proc.sorted(proc.file_lines(dir .. "/out.txt")))
    local lines = proc.file_lines(dir .. "/dead.jsonl")
    assert.are.equal(#bad, #lines, "dead letters:\n" .. table.concat(lines, "\n"))
    local values = {}
    for _, l in ipairs(lines) do
      local d, _, err = json.decode(l)
      assert.is_table(d, "not a JSON object: " .. l .. " (" .. tostring(err) .. ")")
      assert.are.equal("picky", d.operator, l)
      assert.is_string(d.value, l)
      assert.are.equal("key-" .. d.value, d.key, l)
      assert.is_number(d.time, l)
      assert.is_true(d.time > 1e12, "time is ms since the epoch: " .. l)
      assert.is_string(d.error, l)
      assert.is_truthy(d.error:find("picky.lua:4: cannot take " .. d.value, 1, true),
        "error has SCRIPT:LINE: message: " .. l)
      values[#values + 1] = d.value
    end
    assert.are.same(proc.sorted(bad), proc.sorted(values))
  end)

  it("stop: the first error ends the run with exit code 4", function()
    local code, _, stderr = run([[
source   "in"    { kind = "file", path = "data.txt" }
operator "picky" { script = "picky.lua", from = "in", on_error = "stop" }
sink     "out"   { kind = "file", path = "out.txt", from = "picky" }
]], 30)
    assert.are.equal(4, code, "exit code; stderr:\n" .. proc.tail(stderr))
    assert.is_truthy(stderr:find("cannot take bad-", 1, true), "the error is logged:\n" .. proc.tail(stderr))
    -- nothing bad got through
    for _, l in ipairs(proc.file_lines(dir .. "/out.txt")) do
      assert.is_truthy(l:match("^good%-%d+$"), l)
    end
  end)
end)
