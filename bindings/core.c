/* core.c - `sluice.core`, the C library as a Lua module for the harness.
 *
 * require("sluice.core") returns { api = <sl_lua_api_t *>, version = "x" }.
 * The api struct is the one a worker hands its Lua state (luaapi.h), so the
 * harness (sluice/testing.lua) runs the same runtime with the same key hash
 * as the server. Its ctx, push and fail are NULL: in the harness those are
 * Lua functions that collect what an operator emits. The struct is static
 * and read-only after load, so any number of states may share it.
 */
#include "log.h"
#include "luaapi.h"

#include <lauxlib.h>
#include <lua.h>

static void harness_log(int level, const char *component, const char *msg) {
  sl_log(level, component, "%s", msg);
}

static const sl_lua_api_t harness_api = {.ctx = NULL,
                                         .push = NULL,
                                         .hash = sl_hash_bytes,
                                         .log = harness_log,
                                         .fail = NULL,
                                         .now_ms = sl_now_ms};

int luaopen_sluice_core(lua_State *L) {
  lua_newtable(L);
  lua_pushlightuserdata(L, (void *)&harness_api);
  lua_setfield(L, -2, "api");
  lua_pushstring(L, SLUICE_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
