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
-- M.scripts, run last, compiles the operators' scripts.

local util = require("sluice.conf_util")

local fmtval, is_int, normalize, join = util.fmtval, util.is_int, util.normalize, util.join
local parse_hostport, suggest, sorted_keys = util.parse_hostport, util.suggest, util.sorted_keys
local check_plain, copy_plain = util.check_plain, util.copy_plain

local M = {}

local SOURCE_KINDS = { file = true, stdin = true, tcp = true, generator = true, redis = true }
local SINK_KINDS = { stdout = true, file = true, tcp = true, redis = true }
local LATER_KINDS = {}
local SOURCE_KIND_LIST = "file, stdin, tcp, generator, redis"
local SINK_KIND_LIST = "stdout, file, tcp, redis"

-- Fields allowed per declaration (and per kind for sources and sinks).
local FIELDS = {
  pipeline = { workers = true, guarantee = true, checkpoint = true, admin = true,
               max_parallelism = true },
  operator = { script = true, from = true, grouping = true, parallelism = true,
               params = true, on_error = true, dead_letter = true, jit = true,
               allow = true },
  source = {
    file = { kind = true, path = true, follow = true, max_line = true },
    stdin = { kind = true, max_line = true },
    tcp = { kind = true, listen = true, max_line = true },
    generator = { kind = true, count = true, rate = true },
    redis = { kind = true, url = true, stream = true, group = true, consumer = true,
              start = true, field = true, connect_timeout = true },
  },
  sink = {
    stdout = { kind = true, from = true },
    file = { kind = true, path = true, from = true },
    tcp = { kind = true, connect = true, from = true },
    redis = { kind = true, url = true, command = true, key = true, field = true,
              from = true, connect_timeout = true },
  },
}
-- Every field any kind of source/sink knows (to tell "unknown" from "not for this kind").
local ANY_FIELD = { source = {}, sink = {} }
for _, t in ipairs({ "source", "sink" }) do
  for _, set in pairs(FIELDS[t]) do
    for f in pairs(set) do ANY_FIELD[t][f] = true end
  end
end
ANY_FIELD.source.parallelism = true
ANY_FIELD.sink.parallelism = true
ANY_FIELD.source.from = true

local REQUIRED = {
  source = { file = { "path" }, tcp = { "listen" }, redis = { "url", "stream" } },
  sink = { file = { "path" }, tcp = { "connect" }, redis = { "url", "command", "key" } },
}

local GROUPINGS = { shuffle = true, key = true, broadcast = true, forward = true }
local ON_ERROR = { skip = true, dead_letter = true, stop = true }
local GUARANTEES = { at_most_once = 1, at_least_once = 2, exactly_once = 3 }
local ALLOW = { io = true, os = true, ffi = true, require = true }
local REDIS_COMMANDS = { xadd = true, hset = true, set = true, publish = true }

local DEFAULT_MAX_LINE = 1048576
local DEFAULT_MAX_PARALLELISM = 128

-- Checks c.decls. Sets c.by_name (name -> declaration), c.pipeline_decl,
-- c.P (the pipeline's settings), c.checkpoint_given, c.nodes_decl (every
-- declaration but the pipeline's, in order) and c.scripts_to_compile.
function M.declarations(c)
  local err, ferr = c.err, c.ferr
  local path, decls, dir, arg_dir = c.path, c.decls, c.dir, c.arg_dir

  -- names
  local by_name = {}
  local pipeline_decl
  for _, d in ipairs(decls) do
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

  -- per-declaration field checks
  local function check_fields(d, allowed, all)
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

  local function check_int(d, field, min, default)
    local v = d.fields[field]
    if v == nil then return default end
    if not is_int(v) or v < min then
      ferr(d, field, string.format("%s must be an integer >= %d (got %s)", field, min, fmtval(v)))
      return default
    end
    return v
  end
  local function check_bool(d, field, default)
    local v = d.fields[field]
    if v == nil then return default end
    if type(v) ~= "boolean" then
      ferr(d, field, string.format("%s must be true or false (got %s)", field, fmtval(v)))
      return default
    end
    return v
  end
  local function check_string(d, field)
    local v = d.fields[field]
    if v == nil then return nil end
    if type(v) ~= "string" or v == "" then
      ferr(d, field, string.format("%s must be a non-empty string (got %s)", field, fmtval(v)))
      return nil
    end
    return v
  end
  -- A redis source or sink: url, and the kind's own fields.
  local function check_redis(d, n)
    local F = d.fields
    local url = check_string(d, "url")
    if url and not url:match("^redis://[^/?]+") then
      ferr(d, "url", 'url must be "redis://[:PASSWORD@]HOST:PORT[/DB]" (got ' .. fmtval(url) .. ")")
    end
    n.url = url
    local ct = F.connect_timeout
    if ct ~= nil then
      local num, unit = tostring(ct):match("^(%d+%.?%d*)(%a*)$")
      local mult = ({ [""] = 1, ms = 1, s = 1000, m = 60000 })[unit or "?"]
      if not num or not mult or tonumber(num) * mult <= 0 then
        ferr(d, "connect_timeout", 'connect_timeout must be a duration like "5s" (got '
          .. fmtval(ct) .. ")")
      else
        n.connect_timeout_ms = tonumber(num) * mult
      end
    end
    if d.type == "source" then
      n.stream = check_string(d, "stream")
      n.group = check_string(d, "group")
      n.consumer = check_string(d, "consumer")
      n.field = check_string(d, "field") or "v"
      local start = F.start
      if start ~= nil and start ~= "first" and start ~= "last" then
        ferr(d, "start", 'start must be "first" or "last" (got ' .. fmtval(start) .. ")")
        start = nil
      end
      n.start_at = start or "last"
    else
      local cmd = F.command
      if cmd ~= nil and not REDIS_COMMANDS[cmd] then
        ferr(d, "command", "command must be xadd, hset, set or publish (got " .. fmtval(cmd) .. ")")
        cmd = nil
      end
      n.command = cmd
      n.key = check_string(d, "key")
      n.field = check_string(d, "field") -- hset: a template, default "{key}"
      if n.field and cmd ~= "hset" then
        ferr(d, "field", "field applies to command = \"hset\" only")
      end
    end
  end

  local function check_hostport(d, field, allow_port0)
    local v = d.fields[field]
    if v == nil then return nil end
    local hp = parse_hostport(v, allow_port0)
    if not hp then
      ferr(d, field, string.format(
        '%s must be "HOST:PORT" with an IPv4 address, [IPv6] or localhost and a port %s (got %s)',
        field, allow_port0 and "0-65535" or "1-65535", fmtval(v)))
    end
    return hp
  end

  -- pipeline
  local P = { name = nil, workers = nil, guarantee = nil, max_parallelism = DEFAULT_MAX_PARALLELISM }
  local checkpoint_given = false
  if pipeline_decl then
    local d = pipeline_decl
    check_fields(d, FIELDS.pipeline)
    P.name = d.name
    P.workers = check_int(d, "workers", 1, nil)
    P.max_parallelism = check_int(d, "max_parallelism", 1, DEFAULT_MAX_PARALLELISM)
    local g = d.fields.guarantee
    if g ~= nil then
      if type(g) ~= "string" or not GUARANTEES[g] then
        ferr(d, "guarantee", string.format(
          "guarantee must be at_most_once, at_least_once or exactly_once (got %s)", fmtval(g)))
      else
        P.guarantee = g
      end
    end
    local cp = d.fields.checkpoint
    if cp ~= nil then
      if not c.supported.checkpoint then
        ferr(d, "checkpoint", "checkpoint is not supported by this version yet")
      else
        -- kept for the release that accepts it
        if type(cp) ~= "table" then
          ferr(d, "checkpoint", "checkpoint must be a table { every = \"1s\", store = \"file://...\" }")
        else
          checkpoint_given = true
          local function duration(field)
            local v, ms = cp[field], nil
            if type(v) == "string" then
              local n, unit = v:match("^(%d+%.?%d*)(%a+)$")
              local mult = ({ ms = 1, s = 1000, m = 60000, h = 3600000 })[unit or ""]
              ms = n and mult and tonumber(n) * mult
            elseif type(v) == "number" then
              ms = v
            end
            if v ~= nil and (not ms or ms <= 0) then
              ferr(d, field, "checkpoint." .. field
                .. ' must be a duration like "500ms", "1s", "2m" (got ' .. fmtval(v) .. ")")
              ms = nil
            end
            return ms
          end
          local ms = duration("every")
          local timeout_ms = duration("timeout")
          local connect_ms = duration("connect_timeout")
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
            store = "file://" .. join(dir, store:sub(8))
          end
          P.checkpoint = { every_ms = ms or 1000, timeout_ms = timeout_ms or 60000,
                           connect_ms = connect_ms or 30000,
                           keep = keep or 3,
                           store = store or ("file://" .. join(dir, "state/" .. P.name)) }
        end
      end
    end
    local admin = d.fields.admin
    if admin ~= nil then
      if not c.supported.admin then
        ferr(d, "admin", "admin is not supported by this version yet")
      else
        -- A bare port (9600, "9600" or ":9600") binds to loopback; any
        -- other address must be given in full ("0.0.0.0:9600").
        local port = type(admin) == "number" and admin
          or (type(admin) == "string" and tonumber(admin:match("^:?(%d+)$")))
        if port and port == math.floor(port) and port >= 0 and port <= 65535 then
          P.admin = "127.0.0.1:" .. math.floor(port)
        else
          P.admin = check_hostport(d, "admin", true)
        end
      end
    end
  end
  if not P.name then
    P.name = (path:match("([^/]+)$") or path):gsub("%.conf$", "")
  end

  -- sources, operators, sinks
  local nodes_decl = {}
  for _, d in ipairs(decls) do
    if d.type ~= "pipeline" then nodes_decl[#nodes_decl + 1] = d end
  end
  local scripts_to_compile = {}
  local have_source = false
  for _, d in ipairs(nodes_decl) do
    local F = d.fields
    local n = { name = d.name, type = d.type, line = d.line, decl = d }
    d.node = n
    if d.type == "source" or d.type == "sink" then
      if d.type == "source" then have_source = true end
      local kinds = d.type == "source" and SOURCE_KINDS or SINK_KINDS
      local kind = F.kind
      local kind_ok = false
      if kind == nil and d.broken then
        -- already reported
      elseif kind == nil then
        ferr(d, nil, "missing required field 'kind' (" ..
          (d.type == "source" and SOURCE_KIND_LIST or SINK_KIND_LIST) .. ")")
      elseif type(kind) == "string" and LATER_KINDS[kind] then
        ferr(d, "kind", "kind '" .. kind .. "' is not supported yet")
        d.later = true
      elseif type(kind) ~= "string" or not kinds[kind] then
        ferr(d, "kind", string.format("unknown %s kind %s (%s)", d.type, fmtval(kind),
          d.type == "source" and SOURCE_KIND_LIST or SINK_KIND_LIST))
      else
        kind_ok = true
      end
      n.kind = kind_ok and kind or nil
      n.parallelism = 1
      if d.broken or d.later then
        -- no more noise about a declaration we could not read
      elseif kind_ok then
        check_fields(d, FIELDS[d.type][kind], ANY_FIELD[d.type])
        for _, req in ipairs((REQUIRED[d.type] or {})[kind] or {}) do
          if F[req] == nil then ferr(d, nil, "missing required field '" .. req .. "'") end
        end
      else
        -- still report fields no kind knows
        local all = {}
        for k in pairs(ANY_FIELD[d.type]) do all[k] = true end
        all.parallelism = nil
        if d.type == "source" then all.from = nil end
        check_fields(d, all, nil)
      end
      if kind_ok then
        if F.path ~= nil then
          local p = check_string(d, "path")
          n.path = p and join(dir, p)
        end
        if d.type == "source" then
          if kind == "file" then n.follow = check_bool(d, "follow", false) end
          if kind == "file" or kind == "stdin" or kind == "tcp" then
            n.max_line = check_int(d, "max_line", 1, DEFAULT_MAX_LINE)
          end
          if kind == "tcp" then n.listen = check_hostport(d, "listen", true) end
          if kind == "generator" then
            local c = F.count
            if c == nil then
              n.count = -1
            elseif not is_int(c) or c < 0 then
              ferr(d, "count", "count must be an integer >= 0 (leave it out for no end) (got "
                .. fmtval(c) .. ")")
              n.count = -1
            else
              n.count = c
            end
            local r = F.rate
            if r == nil then
              n.rate = 0
            elseif type(r) ~= "number" or r ~= r or r < 0 or r == math.huge then
              ferr(d, "rate", "rate must be a number >= 0 (records per second, 0 = unlimited) (got "
                .. fmtval(r) .. ")")
              n.rate = 0
            else
              n.rate = r
            end
          end
        else
          if kind == "tcp" then n.connect = check_hostport(d, "connect", false) end
        end
        if kind == "redis" then check_redis(d, n) end
      end
    elseif d.type == "operator" then
      check_fields(d, FIELDS.operator)
      if F.script == nil and not d.broken then ferr(d, nil, "missing required field 'script'") end
      if F.from == nil and not d.broken then ferr(d, nil, "missing required field 'from'") end
      local script = check_string(d, "script")
      if script then
        n.script = join(dir, script)
        n.chunkname = "@" .. (script:sub(1, 1) == "/" and normalize(script) or join(arg_dir, script))
        scripts_to_compile[#scripts_to_compile + 1] = { d = d, n = n, given = script }
      end
      local g = F.grouping
      if g == nil then
        n.grouping = "shuffle"
      elseif type(g) ~= "string" or not GROUPINGS[g] then
        ferr(d, "grouping", "grouping must be shuffle, key, broadcast or forward (got "
          .. fmtval(g) .. ")")
        n.grouping = "shuffle"
      else
        n.grouping = g
      end
      n.parallelism = check_int(d, "parallelism", 1, 1)
      if n.parallelism > P.max_parallelism then
        ferr(d, "parallelism", string.format("parallelism %d exceeds max_parallelism %d",
          n.parallelism, P.max_parallelism))
      end
      local params = F.params
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
      local oe = F.on_error
      if oe == nil then
        n.on_error = F.dead_letter ~= nil and "dead_letter" or "skip"
      elseif type(oe) ~= "string" or not ON_ERROR[oe] then
        ferr(d, "on_error", "on_error must be skip, dead_letter or stop (got " .. fmtval(oe) .. ")")
        n.on_error = "skip"
        n.on_error_bad = true
      else
        n.on_error = oe
      end
      n.jit = check_bool(d, "jit", true)
      local allow = F.allow
      n.allow = {}
      if allow ~= nil then
        local okallow = type(allow) == "table"
        if okallow then
          for k, v in pairs(allow) do
            if not is_int(k) or k < 1 or k > #allow or type(v) ~= "string" or not ALLOW[v] then
              okallow = false
            end
          end
        end
        if not okallow then
          ferr(d, "allow", 'allow must be a list of strings among "io", "os", "ffi", "require"')
        else
          for _, v in ipairs(allow) do n.allow[v] = true end
        end
      end
    end
    -- from (operators and sinks)
    if d.type ~= "source" then
      local from = d.fields.from
      n.from_names = {}
      if from ~= nil then
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
        else
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
      end
    end
  end
  if not have_source then
    err(pipeline_decl and pipeline_decl.line or 1, "no source declared")
  end

  c.by_name, c.pipeline_decl = by_name, pipeline_decl
  c.P, c.checkpoint_given = P, checkpoint_given
  c.nodes_decl, c.scripts_to_compile = nodes_decl, scripts_to_compile
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
