-- sluice.runtime_sandbox: the globals an operator script runs with.
--
-- Every operator instance, and every version a hot reload prepares, loads
-- its script into a fresh global table of its own: the safe parts of the
-- base library, copies of string, table, math, bit and coroutine, a
-- reduced os, and a require limited to a few modules. The node's `allow`
-- set (from the conf) adds io, os, ffi or the full require. print logs as
-- the instance. sluice.runtime builds instances with instance_env and
-- re-exports make_env (rt.make_env); what the script must return is
-- checked there (op_of_chunk).

local ffi = require("ffi")
local tnew = require("table.new")
local tclear = require("table.clear")

local tostring, error, next, select, concat, format =
      tostring, error, next, select, table.concat, string.format

local M = {}

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

local SAFE_BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
  "tonumber", "tostring", "type", "unpack", "rawget", "rawset", "rawequal",
  "setmetatable", "getmetatable",
}

local SAFE_REQUIRE = {
  ["string.buffer"] = true, ["table.new"] = true, ["table.clear"] = true,
  ["bit"] = true,
}

-- Builds a fresh global table for one operator instance.
-- `allow` is the node's set: io, os, ffi, require.
local function make_env(allow, print_fn)
  allow = allow or {}
  local env = {}
  for _, name in ipairs(SAFE_BASE) do env[name] = _G[name] end
  env._VERSION = _VERSION
  env.print = print_fn
  env.string = copy(string)
  local t = copy(table)
  t.new, t.clear = tnew, tclear
  t.unpack = t.unpack or unpack
  env.table = t
  env.math = copy(math)
  env.bit = copy(require("bit"))
  env.coroutine = copy(coroutine)
  if allow.os then
    env.os = copy(os)
  else
    env.os = { time = os.time, clock = os.clock, date = os.date }
  end
  if allow.io then env.io = io end
  if allow.require then
    env.require = require
  else
    local ffi_ok = allow.ffi
    env.require = function(name)
      if SAFE_REQUIRE[name] or (ffi_ok and name == "ffi") then
        return require(name)
      end
      error(format("require '%s' is not allowed in an operator script " ..
                   "(the conf can grant it with allow = { 'require' })",
                   tostring(name)), 2)
    end
  end
  if allow.ffi then env.ffi = ffi end
  env._G = env
  return env
end
M.make_env = make_env

-- A fresh sandbox for one instance of `node` (print logs as the instance).
function M.instance_env(w, node, component)
  local port = w.port
  return make_env(node.allow, function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    port.log(1, component, concat(parts, " "))
  end)
end

return M
