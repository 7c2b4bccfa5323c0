/* test_kinds.c - the two registries of kinds agree.
 *
 * server/kinds.c lists the C vtables (what a kind guarantees is read off
 * them); bindings/sluice/kinds.lua lists each kind's fields and flags for
 * the conf. Both must name the same kinds, and the flags the conf checks a
 * guarantee against (a source `replayable`, a sink `committing`) must be
 * what the C vtable can do. Needs SLUICE_LUA_DIR (set by CTest).
 */
#include "check.h"
#include "kinds.h"
#include "luastate.h"

#include <lauxlib.h>
#include <string.h>

/* Lua's entry for kind `name` of list `list` ("sources" | "sinks") pushed,
 * or nil. The module is on top of the stack. */
static void lua_entry(lua_State *L, const char *list, const char *name) {
  lua_getfield(L, -1, list);
  int n = (int)lua_objlen(L, -1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "name");
    int same = !strcmp(lua_tostring(L, -1), name);
    lua_pop(L, 1);
    if (same) {
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

static int lua_flag(lua_State *L, const char *flag) {
  lua_getfield(L, -1, flag);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static int lua_count(lua_State *L, const char *list) {
  lua_getfield(L, -1, list);
  int n = (int)lua_objlen(L, -1);
  lua_pop(L, 1);
  return n;
}

int main(void) {
  lua_State *L = sl_lua_create();
  CHECK(L != NULL);
  if (sl_lua_require(L, "sluice.kinds"))
    CHECK_FAIL_("require sluice.kinds: %s", lua_tostring(L, -1));
  int n_src = 0, n_sink = 0;
  for (const sl_source_vt_t *vt; (vt = sl_kinds_source_at(n_src)); n_src++) {
    lua_entry(L, "sources", vt->kind);
    if (lua_isnil(L, -1))
      CHECK_FAIL_("source kind '%s' is in kinds.c, not in kinds.lua", vt->kind);
    CHECK_EQ_INT(lua_flag(L, "replayable"), sl_kinds_replayable(vt));
    CHECK(sl_kinds_source(vt->kind) == vt);
    lua_pop(L, 1);
  }
  for (const sl_sink_vt_t *vt; (vt = sl_kinds_sink_at(n_sink)); n_sink++) {
    lua_entry(L, "sinks", vt->kind);
    if (lua_isnil(L, -1))
      CHECK_FAIL_("sink kind '%s' is in kinds.c, not in kinds.lua", vt->kind);
    CHECK_EQ_INT(lua_flag(L, "committing"), sl_kinds_committing(vt));
    CHECK(sl_kinds_sink(vt->kind) == vt);
    lua_pop(L, 1);
  }
  /* and nothing more in Lua than in C */
  CHECK_EQ_INT(lua_count(L, "sources"), n_src);
  CHECK_EQ_INT(lua_count(L, "sinks"), n_sink);
  CHECK(sl_kinds_source("nope") == NULL && sl_kinds_sink(NULL) == NULL);
  lua_close(L);
  printf("test_kinds: %d source kinds, %d sink kinds agree\n", n_src, n_sink);
  return CHECK_DONE();
}
