-- sluice.runtime_port: the port over the C API (server/luaapi.h).
--
-- A worker's Lua state gets a pointer to an sl_lua_api_t from the core;
-- ffi_port(api) turns it into the port table sluice.runtime's new_worker
-- takes: { push, hash, log, fail, now } (plus api and hash_ffi, and
-- hrtime/observe when the core has them). Any table with those five
-- functions will do, which is how sluice.testing and the
-- specs run the runtime without the core. sluice.runtime re-exports
-- ffi_port and cdef (rt.ffi_port, rt.cdef).

local ffi = require("ffi")

local tostring, pcall, error, format = tostring, pcall, error, string.format

local M = {}

-- KEEP IN SYNC with server/luaapi.h.
local CDEF = [[
typedef struct sl_lua_api_s {
  void *ctx;
  void (*push)(void *ctx, int32_t cid, const uint8_t *data, size_t len,
               uint32_t nrec);
  uint32_t (*hash)(const char *s, size_t n);
  void (*log)(int level, const char *component, const char *msg);
  void (*fail)(void *ctx, int code, const char *msg);
  double (*now_ms)(void);
  uint64_t (*hrtime)(void);
  void (*observe)(void *ctx, int32_t gid, uint32_t nrec, uint64_t start_ns);
} sl_lua_api_t;
]]

local function cdef_once()
  if not pcall(ffi.typeof, "sl_lua_api_t") then
    ffi.cdef(CDEF)
  end
end
M.cdef = cdef_once

local function missing(name)
  return function()
    error("sluice port: " .. name .. " is not available here (NULL in sl_lua_api_t)", 2)
  end
end

-- rt.ffi_port(api) -> port. `api` is a lightuserdata (or cdata) pointing to
-- an sl_lua_api_t. Fields that are NULL become functions that raise.
function M.ffi_port(api_ud)
  cdef_once()
  assert(api_ud ~= nil, "ffi_port: api pointer is nil")
  local api = ffi.cast("sl_lua_api_t *", api_ud)
  local port = { api = api }
  local cctx = api.ctx
  if api.push ~= nil then
    local push = api.push
    port.push = function(cid, buf, nrec)
      local p, len = buf:ref()
      push(cctx, cid, p, len, nrec)
    end
  else
    port.push = missing("push")
  end
  if api.hash ~= nil then
    local hash = api.hash
    port.hash = function(s) return hash(s, #s) end
    port.hash_ffi = hash
  else
    port.hash = missing("hash")
  end
  if api.log ~= nil then
    local log = api.log
    port.log = function(level, component, msg)
      log(level, tostring(component), tostring(msg))
    end
  else
    port.log = function(level, component, msg)
      io.stderr:write(format("%s %s: %s\n", level, tostring(component), tostring(msg)))
    end
  end
  if api.fail ~= nil then
    local fail = api.fail
    port.fail = function(code, msg) fail(cctx, code, tostring(msg)) end
  else
    port.fail = missing("fail")
  end
  if api.now_ms ~= nil then
    local now_ms = api.now_ms
    port.now = function() return now_ms() end
  else
    port.now = missing("now_ms")
  end
  -- optional: latency of local exchange (port.observe(gid, n, t0) after a
  -- run that began at t0 = port.hrtime()); absent in the harness
  if api.observe ~= nil and api.hrtime ~= nil then
    local observe, hrtime = api.observe, api.hrtime
    port.hrtime = function() return hrtime() end
    port.observe = function(gid, n, t0) observe(cctx, gid, n, t0) end
  end
  return port
end

return M
