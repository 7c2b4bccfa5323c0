/* luastate.c - creating the LuaJIT states the core runs.
 *
 * Owns the lookup of sluice's Lua modules on disk (computed once, on the main
 * thread, before any worker starts) and the set-up every state gets. Each
 * state it creates belongs to the thread that runs it afterwards.
 */
#include "luastate.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SLUICE_SOURCE_LUA_DIR
#define SLUICE_SOURCE_LUA_DIR "bindings"
#endif

static char lua_dir[PATH_MAX]; /* written once by the first sl_lua_dir() */

static int has_runtime(const char *dir) {
  char f[PATH_MAX + 32];
  snprintf(f, sizeof f, "%s/sluice/runtime.lua", dir);
  return access(f, R_OK) == 0;
}

static void exe_dir(char *out, size_t n) {
  ssize_t len = readlink("/proc/self/exe", out, n - 1);
  if (len <= 0) {
    out[0] = '\0';
    return;
  }
  out[len] = '\0';
  char *slash = strrchr(out, '/');
  if (slash)
    *slash = '\0';
}

const char *sl_lua_dir(void) {
  if (lua_dir[0])
    return lua_dir;
  const char *env = getenv("SLUICE_LUA_DIR");
  char exe[PATH_MAX - 32], cand[PATH_MAX];
  if (env && *env && has_runtime(env)) {
    snprintf(lua_dir, sizeof lua_dir, "%s", env);
    return lua_dir;
  }
  exe_dir(exe, sizeof exe);
  snprintf(cand, sizeof cand, "%s/lua", exe);
  if (!has_runtime(cand))
    snprintf(cand, sizeof cand, "%s/../lib/sluice/lua", exe);
  if (!has_runtime(cand))
    snprintf(cand, sizeof cand, "%s", SLUICE_SOURCE_LUA_DIR);
  snprintf(lua_dir, sizeof lua_dir, "%s", cand);
  return lua_dir;
}

lua_State *sl_lua_create(void) {
  lua_State *L = luaL_newstate();
  if (!L)
    return NULL;
  luaL_openlibs(L);
  const char *dir = sl_lua_dir();
  /* sluice's own modules first, then LuaJIT's default paths */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/?.so;%s", dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 2);
  return L;
}

int sl_lua_require(lua_State *L, const char *module) {
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  return lua_pcall(L, 1, 1, 0) == 0 ? 0 : -1;
}
