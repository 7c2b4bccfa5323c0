-- Hot reload of an operator script in the harness (h:reload), which runs
-- the same runtime calls as the server's workers (prepare / commit).
local testing = require("sluice.testing")

local V1 = [[
local op = {}
function op.process(ctx, v)
  local n = (ctx.state.n or 0) + 1
  ctx.state.n = n
  ctx:emit("v1 " .. ctx.key .. " " .. n, ctx.key)
end
function op.timer(ctx, t) ctx:emit("v1 timer " .. tostring(ctx.key), ctx.key) end
return op
]]

local V2 = [[
local op = {}
local opened = 0
function op.open(ctx) opened = opened + 1 end
function op.process(ctx, v)
  local n = (ctx.state.n or 0) + 1
  ctx.state.n = n
  ctx:emit("v2 " .. ctx.key .. " " .. n .. " open " .. opened, ctx.key)
end
function op.timer(ctx, t) ctx:emit("v2 timer " .. tostring(ctx.key), ctx.key) end
return op
]]

-- v3 keeps { count = n } instead of { n = n }
local V3_MIGRATE = [[
local op = {}
function op.migrate(old, key)
  return { count = old.n, from = key }
end
function op.process(ctx, v)
  ctx.state.count = ctx.state.count + 1
  ctx:emit("v3 " .. ctx.key .. " " .. ctx.state.count .. " " .. ctx.state.from, ctx.key)
end
return op
]]

local BROKEN = [[
local op = {}
function op.process(ctx, v)
  ctx:emit(v
end
return op
]]

local OPEN_FAILS = [[
local op = {}
function op.open(ctx)
  error("no database")
end
function op.process(ctx, v) end
return op
]]

local OPEN_EMITS = [[
local op = {}
function op.open(ctx)
  ctx.greeting = "hello " .. ctx.params.who
  ctx:emit("opened", "sys")
end
function op.process(ctx, v) ctx:emit(ctx.greeting .. " " .. v, ctx.key) end
return op
]]

local function values(records)
  local r = {}
  for i, rec in ipairs(records) do r[i] = rec.value end
  return r
end

describe("sluice.testing h:reload", function()
  local dir, files

  local function write(name, src)
    local p = dir .. "/" .. name
    local f = assert(io.open(p, "wb"))
    f:write(src)
    f:close()
    files[#files + 1] = p
    return p
  end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    files = {}
  end)

  after_each(function()
    for _, p in ipairs(files) do os.remove(p) end
    os.remove(dir)
  end)

  it("swaps the code in and keeps every key's state", function()
    local script = write("count.lua", V1)
    local h = testing.operator(script)
    h:push("x", "a"):push("x", "a"):push("x", "b")
    assert.same({ "v1 a 1", "v1 a 2", "v1 b 1" }, values(h:emitted()))
    assert.equal(1, h:version())
    write("count.lua", V2)
    assert.is_true(h:reload())
    assert.equal(2, h:version())
    h:push("x", "a"):push("x", "b")
    assert.same({ "v2 a 3 open 1", "v2 b 2 open 1" }, values(h:emitted()))
    assert.same({ n = 3 }, h:state("a"))
  end)

  it("keeps pending timers, which fire into the new version", function()
    local script = write("count.lua", V1 .. "")
    local h = testing.operator(script)
    -- a timer set through the live ctx of the running version
    local w = h.w
    h:push("x", "k")
    w.insts[1].ctx.key = "k"
    w.insts[1].ctx:timer(1000)
    h:emitted()
    write("count.lua", V2)
    assert.is_true(h:reload())
    h:advance(1000)
    assert.same({ "v2 timer k" }, values(h:emitted()))
  end)

  it("runs op.migrate(old_state, key) for every key; its result replaces the state", function()
    local script = write("count.lua", V1)
    local h = testing.operator(script)
    h:push("x", "a"):push("x", "a"):push("x", "b")
    h:emitted()
    assert.is_true(h:reload(write("v3.lua", V3_MIGRATE)))
    assert.same({ count = 2, from = "a" }, h:state("a"))
    assert.same({ count = 1, from = "b" }, h:state("b"))
    h:push("x", "a")
    assert.same({ "v3 a 3 a" }, values(h:emitted()))
  end)

  it("a script that does not compile keeps the old one running and says FILE:LINE", function()
    local script = write("count.lua", V1)
    local h = testing.operator(script)
    h:push("x", "a")
    local broken = write("broken.lua", BROKEN)
    local ok, err = h:reload(broken)
    assert.is_nil(ok)
    assert.matches(broken:gsub("%p", "%%%0") .. ":4: ", err)
    assert.equal(1, h:version())
    h:push("x", "a")
    assert.same({ "v1 a 1", "v1 a 2" }, values(h:emitted()))
    -- the next good save is picked up
    write("count.lua", V2)
    assert.is_true(h:reload())
    h:push("x", "a")
    assert.same({ "v2 a 3 open 1" }, values(h:emitted()))
  end)

  it("an open that fails keeps the old one running and says FILE:LINE", function()
    local script = write("count.lua", V1)
    local h = testing.operator(script)
    local bad = write("open_fails.lua", OPEN_FAILS)
    local ok, err = h:reload(bad)
    assert.is_nil(ok)
    assert.matches(bad:gsub("%p", "%%%0") .. ":3: no database", err)
    assert.matches("open of operator", err)
    h:push("x", "a")
    assert.same({ "v1 a 1" }, values(h:emitted()))
  end)

  it("a script without process is refused", function()
    local h = testing.operator(write("count.lua", V1))
    local ok, err = h:reload(write("empty.lua", "return {}"))
    assert.is_nil(ok)
    assert.matches("must return a table with process", err)
  end)

  it("open of the new version sees params; its emits and ctx fields take effect at the swap", function()
    local h = testing.operator(write("count.lua", V1), { params = { who = "world" } })
    h:push("x", "a")
    h:emitted()
    assert.is_true(h:reload(write("greet.lua", OPEN_EMITS)))
    assert.same({ "opened" }, values(h:emitted()))
    h:push("x", "a")
    assert.same({ "hello world x" }, values(h:emitted()))
  end)

  it("a failed open leaves no trace in the running ctx", function()
    local h = testing.operator(write("count.lua", V1), { params = { who = "w" } })
    local ok = h:reload(write("half.lua", [[
local op = {}
function op.open(ctx) ctx.marker = 1; ctx:emit("never"); error("late") end
function op.process(ctx, v) end
return op
]]))
    assert.is_nil(ok)
    assert.is_nil(h.w.insts[1].ctx.marker)
    h:push("x", "a")
    assert.same({ "v1 a 1" }, values(h:emitted()))
  end)

  it("logs the new version", function()
    local h = testing.operator(write("count.lua", V1))
    write("count.lua", V2)
    assert.is_true(h:reload())
    local found
    for _, l in ipairs(h:logs()) do
      if l.msg:match("now runs .*count%.lua %(version 2%)") then found = l end
    end
    assert.is_not_nil(found)
  end)
end)
