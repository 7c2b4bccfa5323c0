-- sluice.conf_eval: runs a conf file in a sandbox and collects its
-- declarations.
--
-- A conf is a Lua chunk whose only globals are the four declarers:
--   pipeline "NAME" { ... }   source "NAME" { ... }
--   operator "NAME" { ... }   sink "NAME" { ... }
-- Each call records a declaration { type, name, line, fields, index }
-- (broken = true when the fields are not a table), in declaration order.
-- The chunk runs with the JIT off under an instruction budget, so an endless
-- loop is an error, not a hang. Syntax and run-time errors are reported at
-- the conf's line (the chunk is named "conf", and "conf:N:" becomes
-- FILE:N through conf_report). Checking what was declared is conf_check's.

local util = require("sluice.conf_util")

local fmtval = util.fmtval

local M = {}

local EVAL_BUDGET = 200 -- conf evaluation budget, in units of 100000 VM instructions

-- Reads and runs c.path, reporting through c.err. Sets c.lines (the conf's
-- text, a line each) and c.decls. false when the conf could not be run to
-- its end (nothing more to check).
function M.eval(c)
  local path, err = c.path, c.err
  local f, oerr = io.open(path, "rb")
  if not f then
    err(1, "cannot read the conf: " .. tostring(oerr):gsub("^.-: ", ""))
    return false
  end
  local text = f:read("*a")
  f:close()
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end

  -- conf positions: the chunk is named "conf" (short: long names get cut in
  -- Lua messages) and "conf:N:" is rewritten to the path the user gave.
  local function relocate(msg, fallback_line)
    msg = tostring(msg)
    local n, rest = msg:match("^conf:(%d+): (.*)$")
    if n then
      err(tonumber(n), rest)
    else
      err(fallback_line or 1, msg)
    end
  end

  local chunk, serr = loadstring(text, "=conf")
  if not chunk then
    relocate(serr)
    return false
  end

  -- the sandbox
  local decls = {}          -- in declaration order
  local pending = {}        -- name given, fields table not (yet)
  local function caller_line(level)
    for l = level, level + 10 do
      local info = debug.getinfo(l, "Sl")
      if not info then break end
      if info.source == "=conf" then return info.currentline end
    end
    return 1
  end
  local function declarer(dtype)
    return function(name)
      local line = caller_line(3)
      if type(name) ~= "string" then
        err(line, string.format('%s: expected a name, as in %s "name" { ... } (got %s)',
          dtype, dtype, fmtval(name)))
        return function() end
      end
      local token = {}
      pending[token] = { type = dtype, name = name, line = line }
      return function(fields)
        pending[token] = nil
        local d = { type = dtype, name = name, line = line, fields = fields,
                    index = #decls + 1 }
        if type(fields) ~= "table" then
          err(line, string.format("%s '%s': expected a table of fields { ... } (got %s)",
            dtype, name, fmtval(fields)))
          d.fields = {}
          d.broken = true
        end
        decls[#decls + 1] = d
      end
    end
  end
  local env = {
    pipeline = declarer("pipeline"), source = declarer("source"),
    operator = declarer("operator"), sink = declarer("sink"),
  }
  setfenv(chunk, env)
  pcall(jit.off, chunk, true) -- count hooks do not fire in compiled traces
  local ticks = 0
  local old_hook, old_mask, old_count = debug.gethook()
  debug.sethook(function()
    ticks = ticks + 1
    if ticks > EVAL_BUDGET then
      error("the conf takes too long to evaluate (an endless loop?)", 0)
    end
  end, "", 100000)
  local ok, rerr = xpcall(chunk, function(e)
    if type(e) == "string" and e:match("^conf:%d+: ") then return e end
    local line = caller_line(2)
    if type(e) ~= "string" then e = "error object is " .. fmtval(e) end
    return "conf:" .. line .. ": " .. e
  end)
  if old_hook then debug.sethook(old_hook, old_mask, old_count) else debug.sethook() end
  if not ok then
    relocate(rerr)
    return false
  end
  for _, p in pairs(pending) do
    err(p.line, string.format('%s \'%s\': missing its fields table, as in %s "%s" { ... }',
      p.type, p.name, p.type, p.name))
  end

  c.lines, c.decls = lines, decls
  return true
end

return M
