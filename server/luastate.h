/* luastate.h - creating the LuaJIT states the core runs.
 *
 * Every state (the control state that reads the conf, one per worker) gets
 * the standard libraries and a package.path that finds sluice's own Lua
 * modules (bindings/sluice/NAME.lua), wherever sluice was built or installed.
 */
#ifndef SL_LUASTATE_H
#define SL_LUASTATE_H

#include <lua.h>

/* The folder holding sluice/NAME.lua (and sluice/core.so): $SLUICE_LUA_DIR,
 * else EXE_DIR/lua, else EXE_DIR/../lib/sluice/lua, else the source tree's
 * bindings/. The string is static; never NULL. */
const char *sl_lua_dir(void);

/* A new state with libraries and paths; NULL on OOM. Close with lua_close. */
lua_State *sl_lua_create(void);

/* Runs `require(module)` and leaves the module on the stack. 0 ok; -1 and
 * the error message on the stack. */
int sl_lua_require(lua_State *L, const char *module);

#endif
