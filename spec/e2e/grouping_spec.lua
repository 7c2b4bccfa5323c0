-- End to end: the four groupings (key, broadcast, shuffle, forward) and an
-- operator with several inputs, checked on what the instances emit.
local proc = require("support.proc")

local KEYER = [[
local op = {}
function op.process(ctx, v)
  ctx:emit(v, "k" .. (tonumber(v) % 50))
end
return op
]]

-- "KEY VALUE INSTANCE" per record
local TAG = [[
local op = {}
function op.process(ctx, v)
  ctx:emit(tostring(ctx.key) .. " " .. tostring(v) .. " " .. tostring(ctx.instance))
end
return op
]]

-- emits a table holding its own instance
local FWD_A = [[
local op = {}
function op.process(ctx, v)
  ctx:emit({ n = v, a = ctx.instance, p = ctx.parallelism }, nil)
end
return op
]]

-- "N A_INSTANCE B_INSTANCE TYPE"
local FWD_B = [[
local op = {}
function op.process(ctx, v)
  if type(v) ~= "table" then
    ctx:emit("notatable " .. tostring(v) .. " -1 " .. tostring(ctx.instance))
    return
  end
  ctx:emit(tostring(v.n) .. " " .. tostring(v.a) .. " " .. tostring(ctx.instance) .. " " .. type(v))
end
return op
]]

local PASS = [[
local op = {}
function op.process(ctx, v) ctx:emit(v) end
return op
]]

local function split3(line)
  return line:match("^(%S+) (%S+) (%S+)$")
end

describe("e2e groupings", function()
  local dir

  before_each(function()
    dir = proc.tmpdir()
    proc.write_tree(dir, {
      ["keyer.lua"] = KEYER, ["tag.lua"] = TAG, ["fwd_a.lua"] = FWD_A,
      ["fwd_b.lua"] = FWD_B, ["pass.lua"] = PASS,
    })
  end)

  after_each(function()
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local function run(conf_text, workers)
    local conf = proc.write_file(dir .. "/p.conf", conf_text)
    local code, _, stderr = proc.run_sluice(conf, { "--workers", tostring(workers or 2) }, 60)
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    return proc.file_lines(dir .. "/out.txt"), stderr
  end

  it("key: every key is seen at exactly one instance, and every record arrives", function()
    local N = 5000
    local lines = run(([[
source   "gen"   { kind = "generator", count = %d }
operator "keyer" { script = "keyer.lua", from = "gen", parallelism = 2 }
operator "tag"   { script = "tag.lua", from = "keyer", grouping = "key", parallelism = 3 }
sink     "out"   { kind = "file", path = "out.txt", from = "tag" }
]]):format(N), 3)
    assert.are.equal(N, #lines)
    local inst_of, seen, instances = {}, {}, {}
    for _, l in ipairs(lines) do
      local k, v, i = split3(l)
      assert.is_not_nil(k, "bad line: " .. l)
      assert.are.equal("k" .. (tonumber(v) % 50), k, "record " .. v .. " came with the wrong key")
      assert.is_nil(seen[v], "record " .. v .. " arrived twice")
      seen[v] = true
      if inst_of[k] then
        assert.are.equal(inst_of[k], i, "key " .. k .. " seen at two instances")
      end
      inst_of[k] = i
      instances[i] = true
    end
    for n = 1, N do assert.is_true(seen[tostring(n)], "record " .. n .. " missing") end
    local ni = 0
    for _ in pairs(instances) do ni = ni + 1 end
    assert.is_true(ni > 1, "all 50 keys went to one instance")
    assert.is_true(ni <= 3)
  end)

  it("broadcast: every record reaches each of the 3 instances once", function()
    local N = 500
    local lines = run(([[
source   "gen" { kind = "generator", count = %d }
operator "tag" { script = "tag.lua", from = "gen", grouping = "broadcast", parallelism = 3 }
sink     "out" { kind = "file", path = "out.txt", from = "tag" }
]]):format(N), 2)
    assert.are.equal(3 * N, #lines)
    local per = {}
    local instances = {}
    for _, l in ipairs(lines) do
      local _, v, i = split3(l)
      assert.is_not_nil(v, "bad line: " .. l)
      per[v] = per[v] or {}
      assert.is_nil(per[v][i], "record " .. v .. " twice at instance " .. i)
      per[v][i] = true
      instances[i] = true
    end
    for n = 1, N do
      local c = 0
      for _ in pairs(per[tostring(n)] or {}) do c = c + 1 end
      assert.are.equal(3, c, "record " .. n .. " reached " .. c .. " instances")
    end
    local ni = 0
    for _ in pairs(instances) do ni = ni + 1 end
    assert.are.equal(3, ni)
  end)

  it("shuffle: every record once, spread over more than one instance", function()
    local N = 20000
    local lines = run(([[
source   "gen" { kind = "generator", count = %d }
operator "tag" { script = "tag.lua", from = "gen", parallelism = 3 }
sink     "out" { kind = "file", path = "out.txt", from = "tag" }
]]):format(N), 3)
    assert.are.equal(N, #lines)
    local seen, used = {}, {}
    for _, l in ipairs(lines) do
      local _, v, i = split3(l)
      assert.is_not_nil(v, "bad line: " .. l)
      assert.is_nil(seen[v], "record " .. v .. " twice")
      seen[v] = true
      used[i] = (used[i] or 0) + 1
    end
    for n = 1, N do assert.is_true(seen[tostring(n)], "record " .. n .. " missing") end
    local ni = 0
    for _ in pairs(used) do ni = ni + 1 end
    assert.is_true(ni > 1, "shuffle used a single instance")
  end)

  for _, workers in ipairs({ 1, 2 }) do
    it("forward (--workers " .. workers .. "): B gets A's table on the same instance", function()
      local N = 3000
      local lines = run(([[
source   "gen" { kind = "generator", count = %d }
operator "a"   { script = "fwd_a.lua", from = "gen", parallelism = 2 }
operator "b"   { script = "fwd_b.lua", from = "a", grouping = "forward", parallelism = 2 }
sink     "out" { kind = "file", path = "out.txt", from = "b" }
]]):format(N), workers)
      assert.are.equal(N, #lines)
      local seen = {}
      local used = {}
      for _, l in ipairs(lines) do
        local n, a, b, t = l:match("^(%S+) (%S+) (%S+) (%S+)$")
        assert.is_not_nil(n, "bad line: " .. l)
        assert.are.equal("table", t, l)
        assert.are.equal(a, b, "record " .. n .. ": emitted by a[" .. a .. "], processed by b[" .. b .. "]")
        assert.is_nil(seen[n], "record " .. n .. " twice")
        seen[n] = true
        used[b] = true
      end
      for i = 1, N do assert.is_true(seen[tostring(i)], "record " .. i .. " missing") end
      local ni = 0
      for _ in pairs(used) do ni = ni + 1 end
      assert.are.equal(2, ni, "both instances of b were used")
    end)
  end

  it("several inputs: an operator with from = {a, b} gets both sources' records", function()
    local lines = run([[
source   "a"   { kind = "generator", count = 100 }
source   "b"   { kind = "generator", count = 50 }
operator "m"   { script = "pass.lua", from = { "a", "b" }, parallelism = 2 }
sink     "out" { kind = "file", path = "out.txt", from = "m" }
]], 2)
    local want = {}
    for i = 1, 100 do want[#want + 1] = tostring(i) end
    for i = 1, 50 do want[#want + 1] = tostring(i) end
    assert.are.same(proc.sorted(want), proc.sorted(lines))
  end)
end)
