-- sluice.conf_report: the conf loader's "FILE:LINE: message" errors.
--
-- One report per conf.load(). Every phase (conf_eval, conf_check,
-- conf_graph, conf_guarantee) adds to it and carries on, so that one run
-- shows every error it can find; conf.lua asks for the list at the end.
-- FILE is the conf's path as the user gave it (or a script's, for script
-- errors); a field's LINE is found by scanning the conf's text.
--
--   local rep = require("sluice.conf_report").new(conf_arg)
--   rep.err(line, msg [, file])   -- file: a script's chunk name
--   rep.set_text(lines, decls)    -- once the conf has been evaluated
--   rep.ferr(d, field, msg)       -- on declaration d, at field's line
--   rep.count()                   -- errors so far
--   rep.finish()                  -- the sorted list of strings

local M = {}

function M.new(conf_arg)
  local errors = {}  -- { {file=, line=, msg=, order=} }
  local lines, decl_lines = {}, {}
  local rep = {}

  local function err(line, msg, file)
    errors[#errors + 1] = { file = file or conf_arg, line = line or 1, msg = msg,
                            order = #errors, script = file ~= nil }
  end
  local function finish_errors()
    -- conf errors sorted by line (stable), then script errors in operator order
    table.sort(errors, function(a, b)
      if a.script ~= b.script then return not a.script end
      if not a.script and a.line ~= b.line then return a.line < b.line end
      return a.order < b.order
    end)
    local out = {}
    for i, e in ipairs(errors) do out[i] = e.file .. ":" .. e.line .. ": " .. e.msg end
    return out
  end

  -- line of a field: scan from the declaration's line to the next one's.
  local function set_text(text_lines, decls)
    lines = text_lines
    decl_lines = {}
    for _, d in ipairs(decls) do decl_lines[#decl_lines + 1] = d.line end
    table.sort(decl_lines)
  end
  local function field_line(d, field)
    local last = #lines
    for _, l in ipairs(decl_lines) do
      if l > d.line then last = l - 1; break end
    end
    local q = tostring(field):gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    for i = d.line, math.max(d.line, last) do
      local s = lines[i] or ""
      if s:find("^%s*" .. q .. "%s*=[^=]") or s:find("[{,]%s*" .. q .. "%s*=[^=]")
        or s:find("^%s*" .. q .. "%s*=$") or s:find("[{,]%s*" .. q .. "%s*=$") then
        return i
      end
    end
    return d.line
  end
  local function ferr(d, field, msg)
    local prefix = d.type == "pipeline" and "" or (d.type .. " '" .. d.name .. "': ")
    err(field and field_line(d, field) or d.line, prefix .. msg)
  end

  rep.err = err
  rep.ferr = ferr
  rep.field_line = field_line
  rep.set_text = set_text
  rep.count = function() return #errors end
  rep.finish = finish_errors
  return rep
end

return M
