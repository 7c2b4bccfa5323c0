-- End to end: a changed conf under a running server (docs/reload.md, issue 5
-- item 3): a valid change restarts the pipeline in-process from a savepoint
-- (state kept by operator name, key groups redistributed, sources resumed);
-- an invalid one is logged with FILE:LINE and the pipeline carries on.
local proc = require("support.proc")

local KEY = [[
local op = {}
function op.process(ctx, v) ctx:emit(v, "k" .. (tonumber(v) % 20)) end
return op
]]

-- Totals at the end of the input.
local TOTALS = [[
local op = {}
function op.process(ctx, v) local st = ctx.state; st.n = (st.n or 0) + 1 end
function op.close(ctx)
  for k, st in ctx:each_state() do ctx:emit(k .. " " .. st.n, k) end
end
return op
]]

-- A running count per record.
local RUNNING = [[
local op = {}
function op.process(ctx, v)
  local st = ctx.state
  st.n = (st.n or 0) + 1
  ctx:emit(ctx.key .. " " .. st.n, ctx.key)
end
return op
]]

local function conf(p, extra)
  return string.format([[
pipeline "cr" { workers = 2%s }
source "g" { kind = "generator", count = 20000, rate = 10000 }
operator "key" { script = "key.lua", from = "g" }
operator "tot" { script = "tot.lua", from = "key", grouping = "key", parallelism = %s }
sink "out" { kind = "file", path = "out.txt", from = "tot" }
]], extra or "", p)
end

-- Rewrites the conf the way editors do: a temp file renamed over it.
local function save(dir, text)
  proc.write_file(dir .. "/p.conf.tmp", text)
  assert(os.rename(dir .. "/p.conf.tmp", dir .. "/p.conf"))
end

describe("e2e conf reload", function()
  local dir, pid

  before_each(function()
    dir = proc.tmpdir()
    proc.write_file(dir .. "/key.lua", KEY)
  end)

  after_each(function()
    if pid and proc.alive(pid) then proc.stop(pid, "KILL", 1) end
    pid = nil
    proc.rm_rf(dir)
  end)

  it("raising parallelism mid-run restarts from a savepoint: totals exact", function()
    proc.write_file(dir .. "/tot.lua", TOTALS)
    proc.write_file(dir .. "/p.conf", conf(2))
    pid = proc.start_sluice(dir .. "/p.conf")
    proc.sleep(0.7)
    save(dir, conf(4))
    local code = proc.wait(pid, 30)
    local err = proc.read_file(dir .. "/stderr") or ""
    assert.are.equal(0, code, err)
    assert.is_truthy(err:match("conf changed"), err)
    assert.is_truthy(err:match("operator 'tot' x4"), err)
    assert.is_truthy(err:match("restoring checkpoint %d+"), err)
    assert.is_truthy(err:match("'g' resumes at offset %d+"), err)
    local want = {}
    for k = 0, 19 do want[#want + 1] = "k" .. k .. " 1000" end
    assert.same(proc.sorted(want), proc.sorted(proc.file_lines(dir .. "/out.txt")))
  end)

  it("an invalid change is logged with FILE:LINE and the pipeline carries on", function()
    proc.write_file(dir .. "/tot.lua", TOTALS)
    proc.write_file(dir .. "/p.conf", conf(2))
    pid = proc.start_sluice(dir .. "/p.conf")
    proc.sleep(0.5)
    save(dir, conf('"four"'))
    assert.is_truthy(proc.wait_for(function()
      return (proc.read_file(dir .. "/stderr") or ""):match("p%.conf:4: operator 'tot': parallelism")
    end, 5), proc.read_file(dir .. "/stderr"))
    assert.is_true(proc.alive(pid))
    save(dir, conf(3)) -- then a good one is picked up
    local code = proc.wait(pid, 30)
    local err = proc.read_file(dir .. "/stderr") or ""
    assert.are.equal(0, code, err)
    assert.is_truthy(err:match("operator 'tot' x3"), err)
    local total = 0
    for _, l in ipairs(proc.file_lines(dir .. "/out.txt")) do total = total + tonumber(l:match("(%d+)$")) end
    assert.are.equal(20000, total)
  end)

  it("exactly_once with checkpoints: a reload mid-run keeps every update exactly once", function()
    proc.write_file(dir .. "/tot.lua", RUNNING)
    local ck = ', checkpoint = { every = "100ms" }'
    proc.write_file(dir .. "/p.conf", conf(2, ck))
    pid = proc.start_sluice(dir .. "/p.conf")
    proc.sleep(0.8)
    save(dir, conf(3, ck))
    local code = proc.wait(pid, 30)
    local err = proc.read_file(dir .. "/stderr") or ""
    assert.are.equal(0, code, err)
    assert.is_truthy(err:match("guarantee exactly_once"), err)
    assert.is_truthy(err:match("operator 'tot' x3"), err)
    local want = {}
    for k = 0, 19 do for n = 1, 1000 do want[#want + 1] = "k" .. k .. " " .. n end end
    assert.same(proc.sorted(want), proc.sorted(proc.file_lines(dir .. "/out.txt")))
  end)
end)
