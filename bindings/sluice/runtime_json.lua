-- sluice.runtime_json: JSON text of live state, for the admin API.
--
-- to_json(v) renders any Lua value (rt.to_json re-exports it), and
-- w:state_json(gid, key) answers the admin server's GET /state/OP/KEY with
-- one key's live state (server/worker.c calls it on the worker's thread).
-- Read-only: nothing here touches the state it renders. sluice.runtime
-- installs state_json on its Worker and hands it get_inst (install).

local type, tostring, tonumber, next, floor, concat, format =
      type, tostring, tonumber, next, math.floor, table.concat, string.format

local M = {}

-- From sluice.runtime, set by install.
local get_inst

-- JSON text of a Lua value, for the admin server. Tables with only keys
-- 1..n are arrays, others objects (keys as strings); NaN and infinities
-- are null; functions, userdata and cycles become strings; depth <= 32.
local function json_str(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    local b = c:byte()
    if b < 32 or b == 127 then return format("\\u%04x", b) end
    return c -- UTF-8 bytes pass through
  end) .. '"'
end

local function to_json(v, depth, seen)
  local t = type(v)
  if t == "string" then return json_str(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == floor(v) and v > -2^53 and v < 2^53 then return format("%d", v) end
    return format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if v == nil then return "null" end
  if t ~= "table" or depth > 32 or seen[v] then return json_str(tostring(v)) end
  seen[v] = true
  local n, count = #v, 0
  for _ in next, v do count = count + 1 end
  local parts = {}
  if n > 0 and n == count then
    for i = 1, n do parts[i] = to_json(v[i], depth + 1, seen) end
    seen[v] = nil
    return "[" .. concat(parts, ",") .. "]"
  end
  for k, x in next, v do
    parts[#parts + 1] = json_str(tostring(k)) .. ":" .. to_json(x, depth + 1, seen)
  end
  table.sort(parts)
  seen[v] = nil
  return "{" .. concat(parts, ",") .. "}"
end
M.to_json = function(v) return to_json(v, 0, {}) end

local W = {}

-- The admin server's GET /state/OP/KEY: JSON of key's live state in
-- instance gid (key as a string, or else as the number it spells), or nil.
function W:state_json(gid, key)
  local inst = get_inst(self, gid, "state")
  local st = inst.states[key]
  if st == nil and tonumber(key) then st = inst.states[tonumber(key)] end
  if st == nil then return nil end
  return to_json(st, 0, {})
end

-- Adds the method above to sluice.runtime's Worker; `rt` holds what it
-- uses of it: get_inst.
function M.install(Worker, rt)
  get_inst = rt.get_inst
  for name, f in next, W do Worker[name] = f end
end

return M
