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

local buffer = require("string.buffer")

local M = {}

-- Features that come in later releases. Their validation code is here; they
-- are rejected with "FIELD is not supported by this version yet" while false.
M.supported = { checkpoint = true, admin = true }

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
local REPLAYABLE = { file = true, generator = true, redis = true }
local COMMITTING_SINKS = { file = true, redis = true }
local REDIS_COMMANDS = { xadd = true, hset = true, set = true, publish = true }

local DEFAULT_MAX_LINE = 1048576
local DEFAULT_MAX_PARALLELISM = 128
local EVAL_BUDGET = 200 -- conf evaluation budget, in units of 100000 VM instructions

---------------------------------------------------------------------------
-- small helpers

local function fmtval(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "table" then return "a table" end
  if t == "function" then return "a function" end
  return tostring(v)
end

local function is_int(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
    and v == math.floor(v)
end

local function normalize(p)
  local abs = p:sub(1, 1) == "/"
  local out = {}
  for seg in p:gmatch("[^/]+") do
    if seg == "." then
      -- skip
    elseif seg == ".." then
      if #out > 0 and out[#out] ~= ".." then
        out[#out] = nil
      elseif not abs then
        out[#out + 1] = ".."
      end
    else
      out[#out + 1] = seg
    end
  end
  local s = table.concat(out, "/")
  if abs then return "/" .. s end
  if s == "" then return "." end
  return s
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function join(dir, p)
  if p:sub(1, 1) == "/" then return normalize(p) end
  return normalize(dir .. "/" .. p)
end

-- "HOST:PORT": IPv4 dotted quad, [IPv6] or localhost (made 127.0.0.1).
-- Returns the normalized string or nil.
local function parse_hostport(s, allow_port0)
  if type(s) ~= "string" then return nil end
  local host, port = s:match("^(%[[%x:%.]+%]):(%d+)$")
  if not host then
    host, port = s:match("^([^:%[%]]+):(%d+)$")
    if not host then return nil end
    if host == "localhost" then
      host = "127.0.0.1"
    else
      local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
      if not a then return nil end
      for _, x in ipairs({ a, b, c, d }) do
        if #x > 3 or tonumber(x) > 255 then return nil end
      end
    end
  elseif not host:find(":", 1, true) then
    return nil
  end
  local n = tonumber(port)
  if #port > 5 or n > 65535 or (n == 0 and not allow_port0) then return nil end
  return host .. ":" .. n
end

-- Edit distance, for "did you mean" hints on unknown fields.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(field, set)
  local best, bd
  for f in pairs(set) do
    local d = distance(field, f)
    if d <= 2 and (not bd or d < bd or (d == bd and f < best)) then best, bd = f, d end
  end
  return best
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return ks
end

-- params may hold only what string.buffer can carry to the workers.
local function check_plain(v, path, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" then return nil end
  if t ~= "table" then return path .. " is " .. fmtval(v) end
  if seen[v] then return path .. " refers back to itself" end
  seen[v] = true
  for _, k in ipairs(sorted_keys(v)) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      return path .. " has a key that is " .. fmtval(k)
    end
    local sub = kt == "string" and k:match("^[%a_][%w_]*$") and (path .. "." .. k)
      or (path .. "[" .. tostring(k) .. "]")
    local err = check_plain(v[k], sub, seen)
    if err then return err end
  end
  seen[v] = nil
  return nil
end

local function copy_plain(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy_plain(x) end
  return c
end

---------------------------------------------------------------------------
-- load

function M.load(path, opts)
  opts = opts or {}
  local errors = {}  -- { {file=, line=, msg=, order=} }
  local conf_arg = path

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

  -- absolute file and folder
  local abs
  if path:sub(1, 1) == "/" then
    abs = normalize(path)
  else
    local cwd = opts.cwd or os.getenv("PWD") or "."
    abs = normalize(cwd .. "/" .. path)
  end
  local dir = dirname(abs)
  -- folder of the conf as the user sees it (for script paths in messages)
  local arg_dir = dirname(path)

  local f, oerr = io.open(path, "rb")
  if not f then
    err(1, "cannot read the conf: " .. tostring(oerr):gsub("^.-: ", ""))
    return nil, finish_errors()
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
    return nil, finish_errors()
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
    return nil, finish_errors()
  end
  for _, p in pairs(pending) do
    err(p.line, string.format('%s \'%s\': missing its fields table, as in %s "%s" { ... }',
      p.type, p.name, p.type, p.name))
  end

  -- line of a field: scan from the declaration's line to the next one's.
  local decl_lines = {}
  for _, d in ipairs(decls) do decl_lines[#decl_lines + 1] = d.line end
  table.sort(decl_lines)
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
      if not M.supported.checkpoint then
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
      if not M.supported.admin then
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

  -- edges
  local dl_used = {} -- sink name -> true
  for _, d in ipairs(nodes_decl) do
    local n = d.node
    if d.type ~= "source" then
      n.in_decls = {}
      for _, name in ipairs(n.from_names) do
        local u = by_name[name]
        if not u then
          ferr(d, "from", "input '" .. name .. "' is not declared")
        elseif u.type == "sink" then
          ferr(d, "from", "input '" .. name .. "' is a sink (a sink has no output)")
        else
          n.in_decls[#n.in_decls + 1] = u
        end
      end
    end
    if d.type == "operator" then
      local dl = d.fields.dead_letter
      if dl ~= nil then
        if type(dl) ~= "string" then
          ferr(d, "dead_letter", "dead_letter must be the name of a sink (got " .. fmtval(dl) .. ")")
        else
          local s = by_name[dl]
          if not s then
            ferr(d, "dead_letter", "dead_letter '" .. dl .. "' is not declared")
          elseif s.type ~= "sink" then
            ferr(d, "dead_letter", "dead_letter '" .. dl .. "' is not a sink")
          elseif s.fields.from ~= nil then
            ferr(d, "dead_letter", "dead_letter '" .. dl ..
              "' must be a sink declared without from (it has from)")
            dl_used[dl] = true
          else
            dl_used[dl] = true
            if n.on_error == "dead_letter" then n.dead_letter_decl = s end
          end
        end
        if d.fields.on_error ~= nil and n.on_error ~= "dead_letter" and not n.on_error_bad then
          ferr(d, "dead_letter", 'dead_letter is used only with on_error = "dead_letter" (on_error is "'
            .. n.on_error .. '")')
        end
      elseif n.on_error == "dead_letter" then
        ferr(d, "on_error", 'on_error = "dead_letter" needs dead_letter = "SINK" (a sink declared without from)')
      end
    end
  end
  for _, d in ipairs(nodes_decl) do
    if d.type == "sink" and d.fields.from == nil and not dl_used[d.name] and not d.duplicate
      and not d.broken then
      err(d.line, "sink '" .. d.name .. "' has no input")
    end
  end
  -- forward needs equal parallelism
  for _, d in ipairs(nodes_decl) do
    local n = d.node
    if d.type == "operator" and n.grouping == "forward" then
      for _, u in ipairs(n.in_decls) do
        if u.node.parallelism ~= n.parallelism then
          ferr(d, "grouping", string.format(
            "forward from '%s' needs equal parallelism ('%s' has %d, '%s' has %d)",
            u.name, u.name, u.node.parallelism, d.name, n.parallelism))
        end
      end
    end
  end

  -- topological order: sources first (declaration order), then Kahn's with
  -- the earliest declared ready node first. Dead-letter edges count.
  local graph_nodes = {}
  for _, d in ipairs(nodes_decl) do
    if not d.duplicate then graph_nodes[#graph_nodes + 1] = d end
  end
  local preds, succs = {}, {}
  for _, d in ipairs(graph_nodes) do preds[d] = {}; succs[d] = {} end
  local function edge(u, v)
    if preds[v] and succs[u] and not preds[v][u] then
      preds[v][u] = true
      succs[u][#succs[u] + 1] = v
    end
  end
  for _, d in ipairs(graph_nodes) do
    for _, u in ipairs(d.node.in_decls or {}) do edge(u, d) end
    if d.node.dead_letter_decl then edge(d, d.node.dead_letter_decl) end
  end
  local order, placed = {}, {}
  local indeg = {}
  for _, d in ipairs(graph_nodes) do
    local c = 0
    for _ in pairs(preds[d]) do c = c + 1 end
    indeg[d] = c
  end
  local function place(d)
    order[#order + 1] = d
    placed[d] = true
    for _, v in ipairs(succs[d]) do indeg[v] = indeg[v] - 1 end
  end
  for _, d in ipairs(graph_nodes) do
    if d.type == "source" then place(d) end
  end
  while true do
    local pick
    for _, d in ipairs(graph_nodes) do
      if not placed[d] and indeg[d] == 0 then pick = d; break end
    end
    if not pick then break end
    place(pick)
  end
  if #order < #graph_nodes then
    -- cycles: strongly connected components among the rest
    local rest = {}
    for _, d in ipairs(graph_nodes) do if not placed[d] then rest[#rest + 1] = d end end
    local index, low, onstack, stack, idx = {}, {}, {}, {}, 0
    local comps = {}
    local function strong(v)
      idx = idx + 1; index[v] = idx; low[v] = idx
      stack[#stack + 1] = v; onstack[v] = true
      for _, w in ipairs(succs[v]) do
        if not placed[w] then
          if not index[w] then
            strong(w); low[v] = math.min(low[v], low[w])
          elseif onstack[w] then
            low[v] = math.min(low[v], index[w])
          end
        end
      end
      if low[v] == index[v] then
        local comp = {}
        repeat
          local w = table.remove(stack); onstack[w] = nil; comp[w] = true
        until w == v
        comps[#comps + 1] = comp
      end
    end
    for _, d in ipairs(rest) do if not index[d] then strong(d) end end
    local cycles = {}
    for _, comp in ipairs(comps) do
      local start
      local size = 0
      for _, d in ipairs(rest) do
        if comp[d] then size = size + 1; start = start or d end
      end
      if size > 1 or preds[start][start] then
        -- shortest path start -> ... -> start inside the component
        local prev, queue, found = {}, { start }, false
        local qi = 1
        while qi <= #queue and not found do
          local v = queue[qi]; qi = qi + 1
          for _, w in ipairs(succs[v]) do
            if w == start then prev[start] = v; found = true; break end
            if comp[w] and prev[w] == nil then prev[w] = v; queue[#queue + 1] = w end
          end
        end
        local path = { start.name }
        local v = prev[start]
        while v ~= start do table.insert(path, 1, v.name); v = prev[v] end
        table.insert(path, 1, start.name)
        cycles[#cycles + 1] = { d = start, text = table.concat(path, " -> ") }
      end
    end
    for _, c in ipairs(cycles) do
      err(field_line(c.d, "from"), "cycle: " .. c.text)
    end
  end

  -- guarantee
  local sources_in, sinks_in = {}, {}
  for _, d in ipairs(graph_nodes) do
    if d.type == "source" and d.node.kind then sources_in[#sources_in + 1] = d end
    if d.type == "sink" and d.node.kind then sinks_in[#sinks_in + 1] = d end
  end
  local unreplayable, uncommitting
  for _, d in ipairs(sources_in) do
    if not REPLAYABLE[d.node.kind] then unreplayable = unreplayable or d end
  end
  for _, d in ipairs(sinks_in) do
    if not COMMITTING_SINKS[d.node.kind] then uncommitting = uncommitting or d end
  end
  -- An error for every source or sink in `list` whose kind cannot give it.
  local function refuse(d, list, kinds, guarantee, what, gives)
    for _, s in ipairs(list) do
      if not kinds[s.node.kind] then
        ferr(d, "guarantee", string.format("%s cannot be given: %s '%s' (%s) %s",
          guarantee, what, s.name, s.node.kind, gives))
      end
    end
  end
  local guarantee, reason
  if P.guarantee then
    guarantee = P.guarantee
    reason = "set by the conf"
    local d = pipeline_decl
    if guarantee == "exactly_once" then
      if not checkpoint_given then
        ferr(d, "guarantee", "exactly_once needs checkpointing (a checkpoint block)")
      end
      refuse(d, sources_in, REPLAYABLE, "exactly_once", "source",
        "is not replayable (at_most_once only)")
      refuse(d, sinks_in, COMMITTING_SINKS, "exactly_once", "sink",
        "does not commit (at_least_once at best)")
    elseif guarantee == "at_least_once" then
      refuse(d, sources_in, REPLAYABLE, "at_least_once", "source",
        "is not replayable (at_most_once only)")
    end
  else
    if unreplayable then
      guarantee = "at_most_once"
      reason = string.format("source '%s' (%s) is not replayable", unreplayable.name,
        unreplayable.node.kind)
    elseif not checkpoint_given then
      guarantee = "at_least_once"
      reason = "no checkpoint block: replayable sources restart from their beginning"
    elseif uncommitting then
      guarantee = "at_least_once"
      reason = string.format("sink '%s' (%s) does not commit", uncommitting.name,
        uncommitting.node.kind)
    else
      guarantee = "exactly_once"
      reason = "replayable sources, committing sinks and checkpoints"
    end
  end

  -- scripts compile (in the script's terms)
  for _, s in ipairs(scripts_to_compile) do
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

  if #errors > 0 then return nil, finish_errors() end

  -- Redis defaults that depend on the pipeline's name: the consumer group
  -- is the pipeline's, and a consumer's name is stable across restarts (its
  -- pending entries are re-read after a restore).
  for _, d in ipairs(decls) do
    local n = d.node
    if n and n.kind == "redis" then
      n.pipeline = P.name
      if d.type == "source" then
        n.group = n.group or P.name
        -- several processes sharing a group need distinct consumers: the
        -- host's name (a container's) makes the default one per process,
        -- and stays the same when the process restarts there
        n.consumer = n.consumer or (P.name .. "-" .. n.name
          .. (opts.hostname and ("@" .. opts.hostname) or ""))
      end
    end
  end

  -----------------------------------------------------------------------
  -- plan
  local workers = opts.workers or P.workers or opts.cores or 1
  local plan = {
    file = abs, dir = dir, conf_arg = conf_arg,
    name = P.name, workers = workers, threads = workers + 1,
    guarantee = guarantee, guarantee_reason = reason,
    max_parallelism = P.max_parallelism,
    checkpoint = P.checkpoint, admin = P.admin,
    nodes = {}, instances = {}, channels = {},
  }
  local id_of = {}
  for i, d in ipairs(order) do id_of[d] = i - 1 end
  local gid = 0
  for i, d in ipairs(order) do
    local n = d.node
    local node = {
      id = i - 1, name = n.name, type = n.type, kind = n.kind, line = n.line,
      parallelism = n.parallelism, first_gid = gid, inputs = {},
    }
    gid = gid + n.parallelism
    for _, u in ipairs(n.in_decls or {}) do
      node.inputs[#node.inputs + 1] = { node = id_of[u],
        grouping = n.type == "operator" and n.grouping or "shuffle" }
    end
    if n.type == "source" then
      node.path, node.follow, node.listen, node.max_line = n.path, n.follow, n.listen, n.max_line
      node.count, node.rate = n.count, n.rate
      node.url, node.stream, node.group, node.consumer = n.url, n.stream, n.group, n.consumer
      node.start_at, node.field, node.pipeline = n.start_at, n.field, n.pipeline
      node.connect_timeout_ms = n.connect_timeout_ms
    elseif n.type == "sink" then
      node.path, node.connect = n.path, n.connect
      node.url, node.command, node.key, node.pipeline = n.url, n.command, n.key, n.pipeline
      node.field = n.field
      node.connect_timeout_ms = n.connect_timeout_ms
      node.dead_from = {}
    else
      node.script, node.chunkname, node.params = n.script, n.chunkname, n.params
      node.grouping = n.grouping
      node.on_error, node.jit, node.allow = n.on_error, n.jit, n.allow
      node.dead_letter = n.dead_letter_decl and id_of[n.dead_letter_decl] or nil
    end
    plan.nodes[i - 1] = node
  end
  plan.n_nodes = #order
  plan.n_instances = gid

  -- instances and threads
  local rr = 0
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    for k = 0, node.parallelism - 1 do
      local inst = { gid = node.first_gid + k, node = id, index = k, thread = 0,
                     inputs = 0, in_channels = {}, chained_from = {}, outs = {} }
      if node.type == "operator" then
        local t
        if node.grouping == "forward" then
          for _, e in ipairs(node.inputs) do
            local u = plan.nodes[e.node]
            if u.type == "operator" then
              t = plan.instances[u.first_gid + k].thread
              break
            end
          end
        end
        if not t then
          t = rr % workers + 1
          rr = rr + 1
        end
        inst.thread = t
      end
      plan.instances[inst.gid] = inst
    end
  end

  local cid = 0
  local function channel(from, to)
    local ch = { cid = cid, from = from.gid, to = to.gid,
                 producer = from.thread, consumer = to.thread }
    plan.channels[cid] = ch
    to.in_channels[#to.in_channels + 1] = cid
    cid = cid + 1
    return ch.cid
  end
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    for _, e in ipairs(node.inputs) do
      local u = plan.nodes[e.node]
      for ui = 0, u.parallelism - 1 do
        local up = plan.instances[u.first_gid + ui]
        local out = { node = id, grouping = e.grouping, channels = {} }
        up.outs[#up.outs + 1] = out
        for di = 0, node.parallelism - 1 do
          local down = plan.instances[node.first_gid + di]
          if e.grouping ~= "forward" or ui == di then
            -- Two operator instances on one worker: no channel, the Lua
            -- value is passed by a direct call (chaining for forward; a
            -- local exchange for the other groupings).
            local same = u.type == "operator" and node.type == "operator"
              and up.thread == down.thread
            if same and e.grouping == "forward" then
              out.chained = down.gid
              down.chained_from[#down.chained_from + 1] = up.gid
            elseif same then
              out.direct = out.direct or {}
              out.direct[di] = down.gid
              down.chained_from[#down.chained_from + 1] = up.gid
            else
              out.channels[di] = channel(up, down)
            end
          end
        end
      end
    end
  end
  -- dead letters
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    if node.type == "operator" and node.dead_letter then
      local sink = plan.nodes[node.dead_letter]
      sink.dead_from[#sink.dead_from + 1] = id
      local sinst = plan.instances[sink.first_gid]
      for k = 0, node.parallelism - 1 do
        local inst = plan.instances[node.first_gid + k]
        inst.dead = channel(inst, sinst)
      end
    end
  end
  plan.n_channels = cid
  for g = 0, plan.n_instances - 1 do
    local inst = plan.instances[g]
    inst.inputs = #inst.in_channels + #inst.chained_from
  end
  return plan
end

---------------------------------------------------------------------------
-- codec and description

function M.encode_plan(plan)
  return buffer.encode(plan)
end

function M.decode_plan(s)
  return buffer.decode(s)
end

function M.describe(plan)
  local out = {}
  out[#out + 1] = string.format(
    "pipeline '%s' (%s): %d nodes, %d instances, %d channels, %d workers",
    plan.name, plan.file, plan.n_nodes, plan.n_instances, plan.n_channels, plan.workers)
  out[#out + 1] = string.format("guarantee %s (%s)", plan.guarantee, plan.guarantee_reason or "")
  for id = 0, plan.n_nodes - 1 do
    local n = plan.nodes[id]
    local ins = {}
    for _, e in ipairs(n.inputs) do
      ins[#ins + 1] = plan.nodes[e.node].name .. (n.type == "operator" and ("/" .. e.grouping) or "")
    end
    for _, nid in ipairs(n.dead_from or {}) do ins[#ins + 1] = plan.nodes[nid].name .. "/dead_letter" end
    local threads = {}
    for k = 0, n.parallelism - 1 do
      threads[#threads + 1] = tostring(plan.instances[n.first_gid + k].thread)
    end
    out[#out + 1] = string.format("  %d %s '%s'%s x%d on thread %s%s", id, n.type, n.name,
      n.kind and (" (" .. n.kind .. ")") or "", n.parallelism, table.concat(threads, ","),
      #ins > 0 and (" <- " .. table.concat(ins, ", ")) or "")
  end
  return table.concat(out, "\n") .. "\n"
end

return M
