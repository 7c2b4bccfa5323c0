-- sluice.conf_util: the conf loader's small pure helpers.
--
-- Used by the modules of sluice.conf (conf_report, conf_eval, conf_check,
-- conf_graph, conf_plan): value formatting for messages, whole numbers,
-- path arithmetic (the conf's folder, relative paths made absolute),
-- "HOST:PORT" parsing, "did you mean" hints and the plain-data check of
-- operator params. Nothing here keeps state or reports errors itself.

local M = {}

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

M.fmtval = fmtval
M.is_int = is_int
M.normalize = normalize
M.dirname = dirname
M.join = join
M.parse_hostport = parse_hostport
M.suggest = suggest
M.sorted_keys = sorted_keys
M.check_plain = check_plain
M.copy_plain = copy_plain

return M
