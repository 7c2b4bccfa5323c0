-- sluice.kinds: the registry of source and sink kinds (Lua side).
--
-- The one place a conf's kinds are described: for each kind, its fields
-- (type, default, where the checked value goes), the required ones, a
-- check of the fields together, what it can guarantee (a source
-- `replayable`, a sink `committing`) and what the plan adds to it.
-- conf_check validates a declaration against its kind's entry, conf_plan
-- copies the checked fields into the plan node (plan.c hands every such
-- field to the C kind as a setting, settings.h), conf_guarantee reads the
-- flags. The C side's registry is server/kinds.c (the vtables); the flags
-- there are read off the vtables, and spec/c/test_kinds.c checks that the
-- two registries name the same kinds with the same flags.
--
-- Adding a kind: an entry here, its C file, a line in server/kinds.c.
--
-- A field is { name, type [, default =, to =, min =, values =, msg =,
-- check = function(chk, d, n, v) -> value ] }; types (conf_check.field):
--   string     a non-empty string
--   path       a string, made absolute against the conf's folder
--   bool, int  (min =)
--   listen     "HOST:PORT", port 0 allowed;  connect: port 1-65535
--   enum       one of `values` (msg: the message's start)
--   custom     check(chk, d, n, v) returns the value (chk: conf_check's
--              helpers: ferr, fmtval)
-- `to` is the plan field (default: the name).

local util = require("sluice.conf_util")

local fmtval = util.fmtval

local M = {}

local DEFAULT_MAX_LINE = 1048576
M.DEFAULT_MAX_LINE = DEFAULT_MAX_LINE

local MAX_LINE = { "max_line", "int", min = 1, default = DEFAULT_MAX_LINE }

-- A redis url, as given (redis_url.c parses it in C).
local function redis_url(chk, d, _, url)
  if type(url) ~= "string" or url == "" then
    chk.ferr(d, "url", string.format("url must be a non-empty string (got %s)", fmtval(url)))
    return nil
  end
  if not url:match("^redis://[^/?]+") then
    chk.ferr(d, "url", 'url must be "redis://[:PASSWORD@]HOST:PORT[/DB]" (got ' .. fmtval(url) .. ")")
  end
  return url
end

-- A duration like "5s", "200ms", "1m" or a number of ms, as ms.
local function connect_timeout(chk, d, _, ct)
  local num, unit = tostring(ct):match("^(%d+%.?%d*)(%a*)$")
  local mult = ({ [""] = 1, ms = 1, s = 1000, m = 60000 })[unit or "?"]
  if not num or not mult or tonumber(num) * mult <= 0 then
    chk.ferr(d, "connect_timeout", 'connect_timeout must be a duration like "5s" (got '
      .. fmtval(ct) .. ")")
    return nil
  end
  return tonumber(num) * mult
end

local function generator_count(chk, d, _, count)
  if not util.is_int(count) or count < 0 then
    chk.ferr(d, "count", "count must be an integer >= 0 (leave it out for no end) (got "
      .. fmtval(count) .. ")")
    return -1
  end
  return count
end

local function generator_rate(chk, d, _, r)
  if type(r) ~= "number" or r ~= r or r < 0 or r == math.huge then
    chk.ferr(d, "rate", "rate must be a number >= 0 (records per second, 0 = unlimited) (got "
      .. fmtval(r) .. ")")
    return 0
  end
  return r
end

local REDIS_URL = { "url", "custom", check = redis_url }
local CONNECT_TIMEOUT = { "connect_timeout", "custom", check = connect_timeout,
                          to = "connect_timeout_ms" }

-- Several processes sharing a group need distinct consumers: the host's
-- name (a container's) makes the default one per process, and it stays the
-- same when the process restarts there (its pending entries are re-read
-- after a restore).
local function redis_source_plan(n, P, opts)
  n.group = n.group or P.name
  n.consumer = n.consumer or (P.name .. "-" .. n.name
    .. (opts.hostname and ("@" .. opts.hostname) or ""))
end

local function redis_sink_check(chk, d, n)
  if n.field and n.command ~= "hset" then
    chk.ferr(d, "field", "field applies to command = \"hset\" only")
  end
end

-- In the order conf messages list them.
M.sources = {
  { name = "file", replayable = true, required = { "path" },
    fields = { { "path", "path" }, { "follow", "bool", default = false }, MAX_LINE } },
  { name = "stdin", fields = { MAX_LINE } },
  { name = "tcp", required = { "listen" }, fields = { { "listen", "listen" }, MAX_LINE } },
  { name = "generator", replayable = true,
    fields = { { "count", "custom", check = generator_count, default = -1 },
               { "rate", "custom", check = generator_rate, default = 0 } } },
  { name = "redis", replayable = true, required = { "url", "stream" }, plan = redis_source_plan,
    fields = { REDIS_URL, CONNECT_TIMEOUT, { "stream", "string" }, { "group", "string" },
               { "consumer", "string" }, { "field", "string", default = "v" },
               { "start", "enum", values = { "first", "last" }, default = "last",
                 to = "start_at", msg = 'start must be "first" or "last"' } } },
}

M.sinks = {
  { name = "stdout", fields = {} },
  { name = "file", committing = true, required = { "path" }, fields = { { "path", "path" } } },
  { name = "tcp", required = { "connect" }, fields = { { "connect", "connect" } } },
  { name = "redis", committing = true, required = { "url", "command", "key" },
    check = redis_sink_check,
    fields = { REDIS_URL, CONNECT_TIMEOUT,
               { "command", "enum", values = { "xadd", "hset", "set", "publish" },
                 msg = "command must be xadd, hset, set or publish" },
               { "key", "string" },
               { "field", "string" } } }, -- hset: a template, default "{key}"
  { name = "null", fields = {} },
}

-- by type ("source" | "sink"): name -> entry, and the names as a list.
M.by_type = { source = {}, sink = {} }
M.names = { source = {}, sink = {} }
for t, list in pairs({ source = M.sources, sink = M.sinks }) do
  for _, k in ipairs(list) do
    M.by_type[t][k.name] = k
    M.names[t][#M.names[t] + 1] = k.name
  end
end

-- The entry of kind `name` of type t, or nil.
function M.find(t, name)
  return M.by_type[t] and M.by_type[t][name]
end

-- Every field name any kind of type t knows (to tell a field of another
-- kind from an unknown one).
function M.any_field(t)
  local all = { kind = true }
  for _, k in ipairs(t == "source" and M.sources or M.sinks) do
    for _, f in ipairs(k.fields) do all[f[1]] = true end
  end
  if t == "sink" then all.from = true end
  return all
end

-- The fields kind k allows in a declaration.
function M.allowed(t, k)
  local set = { kind = true }
  for _, f in ipairs(k.fields) do set[f[1]] = true end
  if t == "sink" then set.from = true end
  return set
end

return M
