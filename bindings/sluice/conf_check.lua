-- sluice.conf_check: validation of each declaration of a conf.
--
-- Takes the declarations conf_eval collected and checks them one by one:
-- names (unique, and spelled as a name), the fields each type and kind
-- allows (with "did you mean" hints), their values, the pipeline block
-- (workers, guarantee, checkpoint, admin), every source, sink and operator,
-- and each operator's and sink's `from` list. It builds, for every
-- declaration d that is not the pipeline, d.node: the normalized settings
-- conf_graph links up and conf_plan turns into the plan. Errors go to the
-- report (c.err, c.ferr) and checking goes on, so one run reports them all.
-- M.declarations runs check_names, check_pipeline and check_nodes, in that
-- order; check_nodes hands each declaration to check_endpoint (sources and
-- sinks) or check_operator, then to check_from. Each of those is a few
-- local functions, one per field or group of fields; all take c first.
-- M.scripts, run last, compiles the operators' scripts.

local util = require("sluice.conf_util")
local kinds = require("sluice.kinds")

local fmtval, is_int, normalize, join = util.fmtval, util.is_int, util.normalize, util.join
local parse_hostport, suggest, sorted_keys = util.parse_hostport, util.suggest, util.sorted_keys
local check_plain, copy_plain = util.check_plain, util.copy_plain

local M = {}

-- Fields allowed per declaration; a source's or sink's are its kind's
-- (sluice.kinds).
local FIELDS = {
  pipeline = { workers = true, guarantee = true, checkpoint = true, admin = true,
               max_parallelism = true },
  operator = { script = true, from = true, grouping = true, parallelism = true,
               params = true, on_error = true, dead_letter = true, jit = true,
               allow = true },
}

-- Every field any kind of source/sink knows (to tell "unknown" from "not for this kind").
local ANY_FIELD = { source = kinds.any_field("source"), sink = kinds.any_field("sink") }
ANY_FIELD.source.parallelism = true
ANY_FIELD.sink.parallelism = true
ANY_FIELD.source.from = true

local GROUPINGS = { shuffle = true, key = true, broadcast = true, forward = true }
local ON_ERROR = { skip = true, dead_letter = true, stop = true }
local GUARANTEES = { at_most_once = 1, at_least_once = 2, exactly_once = 3 }
local ALLOW = { io = true, os = true, ffi = true, require = true }
local DEFAULT_MAX_PARALLELISM = 128

---------------------------------------------------------------------------
-- names

-- Sets c.pipeline_decl (the first pipeline declaration) and c.by_name
-- (name -> first declaration of that name); marks the later ones duplicate.
local function check_names(c)
  local err, ferr = c.err, c.ferr
  local by_name = {}
  local pipeline_decl
  for _, d in ipairs(c.decls) do
    if d.type == "pipeline" then
      if pipeline_decl then
        err(d.line, string.format("more than one pipeline declaration (the first is at line %d)",
          pipeline_decl.line))
      else
        pipeline_decl = d
      end
    else
      if not d.name:match("^[%w_%.%-]+$") then
        ferr(d, nil, "a name may hold only letters, digits, '_', '-' and '.'")
      end
      local first = by_name[d.name]
      if first then
        err(d.line, string.format("duplicate name '%s' (first declared at line %d)",
          d.name, first.line))
        d.duplicate = true
      else
        by_name[d.name] = d
      end
    end
  end
  c.by_name, c.pipeline_decl = by_name, pipeline_decl
end

---------------------------------------------------------------------------
-- fields and values

-- Reports each field of d not in allowed; all: every field of the type, to
-- tell a field of another kind from an unknown one.
local function check_fields(c, d, allowed, all)
  local ferr = c.ferr
  for _, k in ipairs(sorted_keys(d.fields)) do
    if type(k) ~= "string" then
      ferr(d, nil, "fields must be name = value pairs (found a value at [" .. tostring(k) .. "])")
    elseif not allowed[k] then
      if k == "parallelism" and (d.type == "source" or d.type == "sink") then
        ferr(d, k, "parallelism is not allowed on a " .. d.type .. " (it always has one instance)")
      elseif k == "from" and d.type == "source" then
        ferr(d, k, "a source takes no input (from)")
      elseif all and all[k] then
        ferr(d, k, string.format("field '%s' does not apply to kind '%s'", k, tostring(d.fields.kind)))
      else
        local s = suggest(k, all or allowed)
        ferr(d, k, string.format("unknown field '%s'%s", k,
          s and (" (did you mean '" .. s .. "'?)") or ""))
      end
    end
  end
end

-- The value of a field, or default when it is left out or wrong.
local function check_int(c, d, field, min, default)
  local v = d.fields[field]
  if v == nil then return default end
  if not is_int(v) or v < min then
    c.ferr(d, field, string.format("%s must be an integer >= %d (got %s)", field, min, fmtval(v)))
    return default
  end
  return v
end

local function check_bool(c, d, field, default)
  local v = d.fields[field]
  if v == nil then return default end
  if type(v) ~= "boolean" then
    c.ferr(d, field, string.format("%s must be true or false (got %s)", field, fmtval(v)))
    return default
  end
  return v
end

local function check_string(c, d, field)
  local v = d.fields[field]
  if v == nil then return nil end
  if type(v) ~= "string" or v == "" then
    c.ferr(d, field, string.format("%s must be a non-empty string (got %s)", field, fmtval(v)))
    return nil
  end
  return v
end

local function check_hostport(c, d, field, allow_port0)
  local v = d.fields[field]
  if v == nil then return nil end
  local hp = parse_hostport(v, allow_port0)
  if not hp then
    c.ferr(d, field, string.format(
      '%s must be "HOST:PORT" with an IPv4 address, [IPv6] or localhost and a port %s (got %s)',
      field, allow_port0 and "0-65535" or "1-65535", fmtval(v)))
  end
  return hp
end

---------------------------------------------------------------------------
-- the pipeline

local function check_guarantee(c, d, P)
  local g = d.fields.guarantee
  if g == nil then return end
  if type(g) ~= "string" or not GUARANTEES[g] then
    c.ferr(d, "guarantee", string.format(
      "guarantee must be at_most_once, at_least_once or exactly_once (got %s)", fmtval(g)))
  else
    P.guarantee = g
  end
end

-- checkpoint.FIELD as milliseconds (nil when left out or wrong).
local function checkpoint_duration(c, d, cp, field)
  local v, ms = cp[field], nil
  if type(v) == "string" then
    local n, unit = v:match("^(%d+%.?%d*)(%a+)$")
    local mult = ({ ms = 1, s = 1000, m = 60000, h = 3600000 })[unit or ""]
    ms = n and mult and tonumber(n) * mult
  elseif type(v) == "number" then
    ms = v
  end
  if v ~= nil and (not ms or ms <= 0) then
    c.ferr(d, field, "checkpoint." .. field
      .. ' must be a duration like "500ms", "1s", "2m" (got ' .. fmtval(v) .. ")")
    ms = nil
  end
  return ms
end

-- The checkpoint table cp of pipeline d, when the version supports it: sets
-- P.checkpoint and c.checkpoint_given.
local function check_checkpoint(c, d, P, cp)
  local ferr = c.ferr
  if type(cp) ~= "table" then
    ferr(d, "checkpoint", "checkpoint must be a table { every = \"1s\", store = \"file://...\" }")
    return
  end
  c.checkpoint_given = true
  local ms = checkpoint_duration(c, d, cp, "every")
  local timeout_ms = checkpoint_duration(c, d, cp, "timeout")
  local connect_ms = checkpoint_duration(c, d, cp, "connect_timeout")
  local keep = cp.keep
  if keep ~= nil and (type(keep) ~= "number" or keep < 1 or keep % 1 ~= 0) then
    ferr(d, "keep", "checkpoint.keep must be a whole number >= 1 (got " .. fmtval(keep) .. ")")
    keep = nil
  end
  local store = cp.store
  if store ~= nil and (type(store) ~= "string" or not (store:match("^file://.+")
      or store:match("^redis://.+") or store:match("^memory:"))) then
    ferr(d, "store", 'checkpoint.store must be "file://PATH", "redis://HOST:PORT/DB" or "memory:" (got '
      .. fmtval(store) .. ")")
    store = nil
  end
  for k in pairs(cp) do
    if k ~= "every" and k ~= "store" and k ~= "keep" and k ~= "timeout"
      and k ~= "connect_timeout" then
      ferr(d, "checkpoint", "unknown field 'checkpoint." .. tostring(k) .. "'")
    end
  end
  if type(store) == "string" and store:match("^file://") then
    store = "file://" .. join(c.dir, store:sub(8))
  end
  P.checkpoint = { every_ms = ms or 1000, timeout_ms = timeout_ms or 60000,
                   connect_ms = connect_ms or 30000,
                   keep = keep or 3,
                   store = store or ("file://" .. join(c.dir, "state/" .. P.name)) }
end

-- The admin address of pipeline d, when the version supports it.
local function check_admin(c, d, P, admin)
  -- A bare port (9600, "9600" or ":9600") binds to loopback; any
  -- other address must be given in full ("0.0.0.0:9600").
  local port = type(admin) == "number" and admin
    or (type(admin) == "string" and tonumber(admin:match("^:?(%d+)$")))
  if port and port == math.floor(port) and port >= 0 and port <= 65535 then
    P.admin = "127.0.0.1:" .. math.floor(port)
  else
    P.admin = check_hostport(c, d, "admin", true)
  end
end

-- Sets c.P, the pipeline's settings (defaults when there is no pipeline
-- declaration), and c.checkpoint_given.
local function check_pipeline(c)
  local ferr = c.ferr
  local P = { name = nil, workers = nil, guarantee = nil, max_parallelism = DEFAULT_MAX_PARALLELISM }
  c.P, c.checkpoint_given = P, false
  local d = c.pipeline_decl
  if d then
    check_fields(c, d, FIELDS.pipeline)
    P.name = d.name
    P.workers = check_int(c, d, "workers", 1, nil)
    P.max_parallelism = check_int(c, d, "max_parallelism", 1, DEFAULT_MAX_PARALLELISM)
    check_guarantee(c, d, P)
    local cp = d.fields.checkpoint
    if cp ~= nil then
      if not c.supported.checkpoint then
        ferr(d, "checkpoint", "checkpoint is not supported by this version yet")
      else
        check_checkpoint(c, d, P, cp) -- kept for the release that accepts it
      end
    end
    local admin = d.fields.admin
    if admin ~= nil then
      if not c.supported.admin then
        ferr(d, "admin", "admin is not supported by this version yet")
      else
        check_admin(c, d, P, admin)
      end
    end
  end
  if not P.name then
    P.name = (c.path:match("([^/]+)$") or c.path):gsub("%.conf$", "")
  end
end

---------------------------------------------------------------------------
-- sources and sinks

-- The kind of source or sink d: the kind, or nil when it is missing, not
-- supported yet (d.later) or unknown.
local function check_kind(c, d)
  local ferr = c.ferr
  local kind_list = table.concat(kinds.names[d.type], ", ")
  local kind = d.fields.kind
  if kind == nil and d.broken then
    -- already reported
  elseif kind == nil then
    ferr(d, nil, "missing required field 'kind' (" .. kind_list .. ")")
  elseif type(kind) ~= "string" or not kinds.find(d.type, kind) then
    ferr(d, "kind", string.format("unknown %s kind %s (%s)", d.type, fmtval(kind), kind_list))
  else
    return kind
  end
  return nil
end

-- The fields of source or sink d: those of its kind and the required ones;
-- without a kind, those no kind knows.
local function check_kind_fields(c, d, kind)
  if d.broken then
    -- no more noise about a declaration we could not read
  elseif kind then
    local k = kinds.find(d.type, kind)
    check_fields(c, d, kinds.allowed(d.type, k), ANY_FIELD[d.type])
    for _, req in ipairs(k.required or {}) do
      if d.fields[req] == nil then c.ferr(d, nil, "missing required field '" .. req .. "'") end
    end
  else
    -- still report fields no kind knows
    local all = {}
    for k in pairs(ANY_FIELD[d.type]) do all[k] = true end
    all.parallelism = nil
    if d.type == "source" then all.from = nil end
    check_fields(c, d, all, nil)
  end
end

-- One field of a source or sink (a field entry of sluice.kinds) into n.
local FIELD_CHECKS = {
  string = function(c, d, f) return check_string(c, d, f[1]) end,
  path = function(c, d, f)
    local p = check_string(c, d, f[1])
    return p and join(c.dir, p)
  end,
  bool = function(c, d, f) return check_bool(c, d, f[1], f.default) end,
  int = function(c, d, f) return check_int(c, d, f[1], f.min or 0, f.default) end,
  listen = function(c, d, f) return check_hostport(c, d, f[1], true) end,
  connect = function(c, d, f) return check_hostport(c, d, f[1], false) end,
  enum = function(c, d, f)
    local v = d.fields[f[1]]
    for _, ok in ipairs(f.values) do
      if v == ok then return v end
    end
    c.ferr(d, f[1], string.format("%s (got %s)", f.msg, fmtval(v)))
    return nil
  end,
  custom = function(c, d, f, n) return f.check(c, d, n, d.fields[f[1]]) end,
}

local function check_kind_values(c, d, n, k)
  for _, f in ipairs(k.fields) do
    local v
    if d.fields[f[1]] ~= nil then v = FIELD_CHECKS[f[2]](c, d, f, n) end
    if v == nil then v = f.default end
    n[f.to or f[1]] = v
  end
  if k.check then k.check(c, d, n) end
end

local function check_endpoint(c, d, n)
  local kind = check_kind(c, d)
  n.kind = kind
  n.parallelism = 1
  check_kind_fields(c, d, kind)
  if kind then check_kind_values(c, d, n, kinds.find(d.type, kind)) end
end

---------------------------------------------------------------------------
-- operators

-- The script's path and chunk name; queues it for M.scripts.
local function check_script(c, d, n)
  local script = check_string(c, d, "script")
  if script then
    n.script = join(c.dir, script)
    n.chunkname = "@" .. (script:sub(1, 1) == "/" and normalize(script) or join(c.arg_dir, script))
    c.scripts_to_compile[#c.scripts_to_compile + 1] = { d = d, n = n, given = script }
  end
end

local function check_grouping(c, d, n)
  local g = d.fields.grouping
  if g == nil then
    n.grouping = "shuffle"
  elseif type(g) ~= "string" or not GROUPINGS[g] then
    c.ferr(d, "grouping", "grouping must be shuffle, key, broadcast or forward (got "
      .. fmtval(g) .. ")")
    n.grouping = "shuffle"
  else
    n.grouping = g
  end
end

local function check_params(c, d, n)
  local ferr = c.ferr
  local params = d.fields.params
  if params == nil then
    n.params = {}
  elseif type(params) ~= "table" then
    ferr(d, "params", "params must be a table (got " .. fmtval(params) .. ")")
    n.params = {}
  else
    local perr = check_plain(params, "params", {})
    if perr then
      ferr(d, "params", "params may hold only booleans, numbers, strings and tables: " .. perr)
      n.params = {}
    else
      n.params = copy_plain(params)
    end
  end
end

local function check_on_error(c, d, n)
  local F = d.fields
  local oe = F.on_error
  if oe == nil then
    n.on_error = F.dead_letter ~= nil and "dead_letter" or "skip"
  elseif type(oe) ~= "string" or not ON_ERROR[oe] then
    c.ferr(d, "on_error", "on_error must be skip, dead_letter or stop (got " .. fmtval(oe) .. ")")
    n.on_error = "skip"
    n.on_error_bad = true
  else
    n.on_error = oe
  end
end

local function check_allow(c, d, n)
  local allow = d.fields.allow
  n.allow = {}
  if allow == nil then return end
  local okallow = type(allow) == "table"
  if okallow then
    for k, v in pairs(allow) do
      if not is_int(k) or k < 1 or k > #allow or type(v) ~= "string" or not ALLOW[v] then
        okallow = false
      end
    end
  end
  if not okallow then
    c.ferr(d, "allow", 'allow must be a list of strings among "io", "os", "ffi", "require"')
  else
    for _, v in ipairs(allow) do n.allow[v] = true end
  end
end

local function check_operator(c, d, n)
  local ferr, F, P = c.ferr, d.fields, c.P
  check_fields(c, d, FIELDS.operator)
  if F.script == nil and not d.broken then ferr(d, nil, "missing required field 'script'") end
  if F.from == nil and not d.broken then ferr(d, nil, "missing required field 'from'") end
  check_script(c, d, n)
  check_grouping(c, d, n)
  n.parallelism = check_int(c, d, "parallelism", 1, 1)
  if n.parallelism > P.max_parallelism then
    ferr(d, "parallelism", string.format("parallelism %d exceeds max_parallelism %d",
      n.parallelism, P.max_parallelism))
  end
  check_params(c, d, n)
  check_on_error(c, d, n)
  n.jit = check_bool(c, d, "jit", true)
  check_allow(c, d, n)
end

---------------------------------------------------------------------------
-- from (operators and sinks)

-- Sets n.from_names: the inputs' names, each once.
local function check_from(c, d, n)
  local ferr = c.ferr
  local from = d.fields.from
  n.from_names = {}
  if from == nil then return end
  local list = type(from) == "string" and { from } or from
  local okf = type(list) == "table" and #list > 0
  if okf then
    for k, v in pairs(list) do
      if not is_int(k) or k < 1 or k > #list or type(v) ~= "string" then okf = false end
    end
  end
  if not okf then
    ferr(d, "from", "from must be a name or a non-empty list of names (got "
      .. fmtval(from) .. ")")
    return
  end
  local seen = {}
  for _, v in ipairs(list) do
    if seen[v] then
      ferr(d, "from", "input '" .. v .. "' is listed twice")
    else
      seen[v] = true
      n.from_names[#n.from_names + 1] = v
    end
  end
end

---------------------------------------------------------------------------
-- every declaration but the pipeline

-- Sets c.nodes_decl and c.scripts_to_compile, and d.node on each of them.
local function check_nodes(c)
  local nodes_decl = {}
  for _, d in ipairs(c.decls) do
    if d.type ~= "pipeline" then nodes_decl[#nodes_decl + 1] = d end
  end
  c.nodes_decl, c.scripts_to_compile = nodes_decl, {}
  local have_source = false
  for _, d in ipairs(nodes_decl) do
    local n = { name = d.name, type = d.type, line = d.line, decl = d }
    d.node = n
    if d.type == "source" or d.type == "sink" then
      if d.type == "source" then have_source = true end
      check_endpoint(c, d, n)
    elseif d.type == "operator" then
      check_operator(c, d, n)
    end
    if d.type ~= "source" then check_from(c, d, n) end
  end
  if not have_source then
    c.err(c.pipeline_decl and c.pipeline_decl.line or 1, "no source declared")
  end
end

-- Checks c.decls. Sets c.by_name (name -> declaration), c.pipeline_decl,
-- c.P (the pipeline's settings), c.checkpoint_given, c.nodes_decl (every
-- declaration but the pipeline's, in order) and c.scripts_to_compile.
function M.declarations(c)
  check_names(c)
  check_pipeline(c)
  check_nodes(c)
end

-- Compiles every operator's script (in the script's terms: its errors are
-- reported as SCRIPT:LINE, after the conf's own).
function M.scripts(c)
  local err, ferr = c.err, c.ferr
  for _, s in ipairs(c.scripts_to_compile) do
    local fh, e = io.open(s.n.script, "rb")
    if not fh then
      ferr(s.d, "script", "cannot read script '" .. s.given .. "': "
        .. tostring(e):gsub("^.-: ", ""))
    else
      local src = fh:read("*a")
      fh:close()
      if src:sub(1, 1) == "#" then src = src:gsub("^[^\n]*", "") end
      local display = s.n.chunkname:sub(2)
      local fn, cerr = loadstring(src, "=script")
      if not fn then
        local ln, rest = tostring(cerr):match("^script:(%d+): (.*)$")
        if ln then
          err(tonumber(ln), rest, display)
        else
          err(1, tostring(cerr), display)
        end
      end
    end
  end

end

return M
