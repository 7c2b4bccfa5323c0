-- sluice.conf: reads a pipeline conf in a sandbox, validates it and plans it.
--
--   local conf = require("sluice.conf")
--   local plan, errors = conf.load("pipeline.conf", { workers = 2, cores = 8, cwd = "/abs" })
--   -- plan: see the "Plan" section of docs/architecture.md
--   -- errors: list of "FILE:LINE: message" strings (FILE as the user gave it)
--   local s = conf.encode_plan(plan); local p = conf.decode_plan(s)
--   io.stderr:write(conf.describe(plan))
--
-- The user-facing reference of the conf is docs/conf.md.
--
-- This file is the entry point: load() runs the phases below in order over
-- one context table c (the conf's paths, the report, and what each phase
-- finds). Every check runs and reports; there is no plan when the conf
-- cannot be run to its end or when anything was reported:
--   conf_report     the "FILE:LINE: message" list every phase adds to
--   conf_eval       the sandbox: runs the conf, collects its declarations
--   conf_check      each declaration's fields and values; the scripts compile
--   conf_graph      inputs and dead letters linked, cycles, topological order
--   conf_guarantee  the delivery guarantee, given or chosen
--   conf_plan       nodes, instances, threads and channels; describe()
-- (conf_util holds the small helpers they share.)

local buffer = require("string.buffer")
local util = require("sluice.conf_util")
local report = require("sluice.conf_report")
local eval = require("sluice.conf_eval")
local check = require("sluice.conf_check")
local graph = require("sluice.conf_graph")
local guarantee = require("sluice.conf_guarantee")
local planner = require("sluice.conf_plan")

local normalize, dirname = util.normalize, util.dirname

local M = {}

-- Features that come in later releases. Their validation code is here; they
-- are rejected with "FIELD is not supported by this version yet" while false.
M.supported = { checkpoint = true, admin = true }

---------------------------------------------------------------------------
-- load

function M.load(path, opts)
  opts = opts or {}
  local rep = report.new(path)
  local c = { path = path, opts = opts, supported = M.supported,
              err = rep.err, ferr = rep.ferr, field_line = rep.field_line }

  -- absolute file and folder
  local abs
  if path:sub(1, 1) == "/" then
    abs = normalize(path)
  else
    local cwd = opts.cwd or os.getenv("PWD") or "."
    abs = normalize(cwd .. "/" .. path)
  end
  c.abs = abs
  c.dir = dirname(abs)
  -- folder of the conf as the user sees it (for script paths in messages)
  c.arg_dir = dirname(path)

  if not eval.eval(c) then return nil, rep.finish() end
  rep.set_text(c.lines, c.decls)
  check.declarations(c)
  graph.build(c)
  guarantee.choose(c)
  check.scripts(c)
  if rep.count() > 0 then return nil, rep.finish() end
  return planner.build(c)
end

---------------------------------------------------------------------------
-- codec and description

function M.encode_plan(plan)
  return buffer.encode(plan)
end

function M.decode_plan(s)
  return buffer.decode(s)
end

M.describe = planner.describe

return M
