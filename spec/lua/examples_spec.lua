-- The example operators shipped in scripts/ and bench/ops/, through the
-- user's harness (sluice.testing). Run from the repository root:
--   LUA_PATH="bindings/?.lua;;" busted --lua=luajit spec/lua/examples_spec.lua
local testing = require("sluice.testing")

local function values(records)
  local r = {}
  for i, rec in ipairs(records) do r[i] = rec.value end
  return r
end

local function sorted(t) table.sort(t) return t end

describe("example operators", function()
  it("split.lua: lowercased words without edge punctuation, keyed by themselves", function()
    local h = testing.operator("scripts/split.lua")
    h:push("The miller's wheel -- well-kept, (oak)!")
    local out = h:emitted()
    assert.same({ "the", "miller's", "wheel", "well-kept", "oak" }, values(out))
    for _, r in ipairs(out) do assert.equal(r.value, r.key) end
    h:push("   ")
    assert.same({}, h:emitted())
  end)

  it("count.lua: a counter per key, 'word count' totals in close", function()
    local h = testing.operator("scripts/count.lua")
    for _, w in ipairs({ "a", "b", "a", "c", "a", "b" }) do h:push(w, w) end
    assert.same({}, h:emitted())
    assert.equal(3, h:state("a").n)
    local out = h:close()
    assert.same({ "a 3", "b 2", "c 1" }, sorted(values(out)))
    for _, r in ipairs(out) do assert.equal(r.value:match("^%S+"), r.key) end
  end)

  it("upper.lua: upper-cases and keeps key and time", function()
    local h = testing.operator("scripts/upper.lua")
    h:push("hello, world", "k", 1234)
    assert.same({ { value = "HELLO, WORLD", key = "k", time = 1234 } }, h:emitted())
  end)

  it("parse_reading.lua: good lines out, bad lines to the dead letters", function()
    local h = testing.operator("scripts/parse_reading.lua",
                               { params = { unit = "C" }, on_error = "dead_letter" })
    h:push("boiler 71.5"):push("intake twelve"):push("boiler"):push("outflow 18")
    assert.same({ "boiler 71.50 C", "outflow 18.00 C" }, values(h:emitted()))
    local dead = h:dead_letters()
    assert.equal(2, #dead)
    assert.equal("intake twelve", dead[1].value.value)
    assert.matches("parse_reading%.lua:%d+: value is not a number: twelve", dead[1].value.error)
    assert.equal("boiler", dead[2].value.value)
    assert.matches("parse_reading%.lua:%d+: expected 'SENSOR VALUE'", dead[2].value.error)
  end)

  it("bench/ops/w1_map.lua: the W1 transform", function()
    local h = testing.operator("bench/ops/w1_map.lua")
    h:push("1700000000123 u0042173 click 42 /products/item/0098765 eu-west-1 9f3a2b1c4d5e6f70 Mozilla/5.0(X11;Linux)")
    assert.same({ "u0042173 CLICK 84" }, values(h:emitted()))
  end)

  it("bench/ops/w2_split.lua and w2_count.lua: the W2 word count", function()
    local s = testing.operator("bench/ops/w2_split.lua")
    local c = testing.operator("bench/ops/w2_count.lua")
    s:push("bake di bake fo"):push("di bake")
    for _, r in ipairs(s:emitted()) do
      assert.equal(r.value, r.key)
      c:push(r.value, r.key)
    end
    assert.same({ "bake 3", "di 2", "fo 1" }, sorted(values(c:close())))
  end)
end)
