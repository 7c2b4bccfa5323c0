/* plan.c - the pipeline's topology, copied from Lua into C.
 *
 * The control Lua state (main thread only, closed before the pipeline runs)
 * calls sluice.conf's load(); this file walks the plan table it returns and
 * fills the arrays of plan.h. Nothing here runs after start-up.
 */
#include "plan.h"

#include "luastate.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

/* ---- reading fields of the table on top of the stack ---- */

static int get_int(lua_State *L, const char *k, int dflt) {
  lua_getfield(L, -1, k);
  int v = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static double get_num(lua_State *L, const char *k, double dflt) {
  lua_getfield(L, -1, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* A copy of a string field, or NULL when absent. *oom set on failure. */
static char *get_str(lua_State *L, const char *k, int *oom) {
  lua_getfield(L, -1, k);
  char *s = NULL;
  if (lua_type(L, -1) == LUA_TSTRING) {
    s = strdup(lua_tostring(L, -1));
    if (!s)
      *oom = 1;
  }
  lua_pop(L, 1);
  return s;
}

/* Reads a list of ints at field k: 1-based if base == 1, [0]-based if 0. */
static int *get_ints(lua_State *L, const char *k, int base, int *n, int *oom) {
  *n = 0;
  lua_getfield(L, -1, k);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  int count = 0;
  while (1) {
    lua_rawgeti(L, -1, count + base);
    int present = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!present)
      break;
    count++;
  }
  int *v = count ? calloc((size_t)count, sizeof *v) : NULL;
  if (count && !v)
    *oom = 1;
  for (int i = 0; v && i < count; i++) {
    lua_rawgeti(L, -1, i + base);
    v[i] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  *n = v ? count : 0;
  return v;
}

/* Reads t[0..max] of field k, skipping holes (a channel list has a hole
 * where the downstream instance is on the same worker: a direct call). */
static int *get_sparse(lua_State *L, const char *k, int *n, int *oom) {
  *n = 0;
  lua_getfield(L, -1, k);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  int max = -1;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TNUMBER && lua_tointeger(L, -2) > max)
      max = (int)lua_tointeger(L, -2);
    lua_pop(L, 1);
  }
  int *v = max >= 0 ? calloc((size_t)max + 1, sizeof *v) : NULL;
  if (max >= 0 && !v)
    *oom = 1;
  for (int i = 0; v && i <= max; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_isnumber(L, -1))
      v[(*n)++] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return v;
}

/* A forward edge has one channel, at the sender's own index (or none when
 * it is chained). */
static int *get_forward(lua_State *L, int index, int *n, int *oom) {
  *n = 0;
  lua_getfield(L, -1, "channels");
  int *v = NULL;
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, index);
    if (lua_isnumber(L, -1)) {
      v = malloc(sizeof *v);
      if (!v)
        *oom = 1;
      else {
        v[0] = (int)lua_tointeger(L, -1);
        *n = 1;
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return v;
}

static int grouping_of(const char *g) {
  if (!g || !strcmp(g, "shuffle"))
    return SL_GROUP_SHUFFLE;
  if (!strcmp(g, "key"))
    return SL_GROUP_KEY;
  if (!strcmp(g, "broadcast"))
    return SL_GROUP_BROADCAST;
  return SL_GROUP_FORWARD;
}

/* ---- nodes, instances, channels ---- */

/* Every string, number and boolean field of the node on top of the stack,
 * as its settings (settings.h): each kind reads its own. */
static void read_settings(lua_State *L, sl_node_cfg_t *c, const char *pipeline,
                          int *oom) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int rc = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      if (lua_type(L, -1) == LUA_TSTRING)
        rc = sl_cfg_set_str(c, k, lua_tostring(L, -1));
      else if (lua_type(L, -1) == LUA_TNUMBER)
        rc = sl_cfg_set_num(c, k, lua_tonumber(L, -1));
      else if (lua_type(L, -1) == LUA_TBOOLEAN)
        rc = sl_cfg_set_bool(c, k, lua_toboolean(L, -1));
    }
    if (rc)
      *oom = 1;
    lua_pop(L, 1);
  }
  if (!c->pipeline && pipeline && sl_cfg_set_str(c, "pipeline", pipeline))
    *oom = 1;
}

static void read_node(lua_State *L, sl_plan_node_t *n, const char *pipeline,
                      int *oom) {
  n->id = get_int(L, "id", 0);
  char *type = get_str(L, "type", oom);
  n->type = !type                     ? SL_NODE_OPERATOR
            : !strcmp(type, "source") ? SL_NODE_SOURCE
            : !strcmp(type, "sink")   ? SL_NODE_SINK
                                      : SL_NODE_OPERATOR;
  free(type);
  n->parallelism = get_int(L, "parallelism", 1);
  n->first_gid = get_int(L, "first_gid", 0);
  n->script = get_str(L, "script", oom);
  n->chunkname = get_str(L, "chunkname", oom);
  char *g = get_str(L, "grouping", oom);
  n->grouping = g ? grouping_of(g) : SL_GROUP_SHUFFLE;
  free(g);
  read_settings(L, &n->cfg, pipeline, oom);
}

static void read_outs(lua_State *L, sl_plan_inst_t *in, int *oom) {
  lua_getfield(L, -1, "outs");
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  in->outs = n ? calloc((size_t)n, sizeof *in->outs) : NULL;
  if (n && !in->outs)
    *oom = 1;
  for (int i = 0; in->outs && i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    char *g = get_str(L, "grouping", oom);
    in->outs[i].grouping = grouping_of(g);
    free(g);
    if (in->outs[i].grouping == SL_GROUP_FORWARD)
      in->outs[i].ch = get_forward(L, in->index, &in->outs[i].n_ch, oom);
    else
      in->outs[i].ch = get_sparse(L, "channels", &in->outs[i].n_ch, oom);
    lua_pop(L, 1);
  }
  in->n_outs = in->outs ? n : 0;
  lua_pop(L, 1);
}

static void read_inst(lua_State *L, sl_plan_inst_t *in, int *oom) {
  in->gid = get_int(L, "gid", 0);
  in->node = get_int(L, "node", 0);
  in->index = get_int(L, "index", 0);
  in->thread = get_int(L, "thread", 0);
  in->n_inputs = get_int(L, "inputs", 0);
  in->in_ch = get_ints(L, "in_channels", 1, &in->n_in_ch, oom);
  int n_from = 0;
  free(get_ints(L, "chained_from", 1, &n_from, oom));
  read_outs(L, in, oom);
  int dead = get_int(L, "dead", -1);
  int total = dead >= 0 ? 1 : 0;
  for (int i = 0; i < in->n_outs; i++)
    total += in->outs[i].n_ch;
  in->out_ch = total ? calloc((size_t)total, sizeof(int)) : NULL;
  if (total && !in->out_ch)
    *oom = 1;
  for (int i = 0; in->out_ch && i < in->n_outs; i++)
    for (int j = 0; j < in->outs[i].n_ch; j++)
      in->out_ch[in->n_out_ch++] = in->outs[i].ch[j];
  if (in->out_ch && dead >= 0)
    in->out_ch[in->n_out_ch++] = dead;
}

/* chained_to: the instances this one calls directly, from the `chained`
 * (forward) and `direct` (local exchange) fields of its outs. */
static void read_chained(lua_State *L, sl_plan_inst_t *in, int n_insts,
                         int *oom) {
  in->chained_to = calloc((size_t)n_insts + 1, sizeof(int));
  if (!in->chained_to) {
    *oom = 1;
    return;
  }
  lua_getfield(L, -1, "outs");
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    int c = get_int(L, "chained", -1);
    if (c >= 0 && in->n_chained_to < n_insts)
      in->chained_to[in->n_chained_to++] = c;
    int nd = 0;
    int *direct = get_sparse(L, "direct", &nd, oom);
    for (int j = 0; j < nd && in->n_chained_to < n_insts; j++)
      in->chained_to[in->n_chained_to++] = direct[j];
    free(direct);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* block_ch: own out channels plus those of everything chained below. */
static int collect_block(sl_plan_t *p, int gid, int *acc, int n, int cap) {
  sl_plan_inst_t *in = &p->insts[gid];
  for (int i = 0; i < in->n_out_ch && n < cap; i++)
    acc[n++] = in->out_ch[i];
  for (int i = 0; i < in->n_chained_to; i++)
    n = collect_block(p, in->chained_to[i], acc, n, cap);
  return n;
}

static int fill_block(sl_plan_t *p) {
  for (int g = 0; g < p->n_insts; g++) {
    int cap = p->n_chans + 1;
    int *acc = calloc((size_t)cap, sizeof(int));
    if (!acc)
      return -1;
    p->insts[g].n_block_ch = collect_block(p, g, acc, 0, cap);
    p->insts[g].block_ch = acc;
  }
  return 0;
}

/* Iterates t[0..n-1] of the field k, calling fn on each element table. */
#define EACH(L, k, n, body)                                                    \
  do {                                                                         \
    lua_getfield(L, -1, k);                                                    \
    for (int i_ = 0; i_ < (n); i_++) {                                         \
      lua_rawgeti(L, -1, i_);                                                  \
      body;                                                                    \
      lua_pop(L, 1);                                                           \
    }                                                                          \
    lua_pop(L, 1);                                                             \
  } while (0)

/* plan.checkpoint = { every_ms, timeout_ms, keep, store } or nil. */
static void read_checkpoint(lua_State *L, sl_plan_t *p, int *oom) {
  lua_getfield(L, -1, "checkpoint");
  if (lua_istable(L, -1)) {
    p->ckpt_store = get_str(L, "store", oom);
    p->ckpt_every_ms = get_num(L, "every_ms", 1000);
    p->ckpt_timeout_ms = get_num(L, "timeout_ms", 60000);
    p->ckpt_connect_ms = get_num(L, "connect_ms", 30000);
    p->ckpt_keep = get_int(L, "keep", 3);
  }
  lua_pop(L, 1);
  p->exactly_once =
      p->ckpt_store && p->guarantee && !strcmp(p->guarantee, "exactly_once");
  int sinks_checkpointing = p->ckpt_store != NULL;
  if (!p->ckpt_store && !*oom) {
    /* No checkpoints: a process-local store that only a conf reload's
     * savepoint uses (confwatch.h). */
    char url[256];
    snprintf(url, sizeof url, "memory:savepoint-%d-%s", (int)getpid(),
             p->name ? p->name : "");
    p->ckpt_store = strdup(url);
    p->ckpt_implicit = 1;
    p->ckpt_every_ms = 1e15;
    p->ckpt_timeout_ms = 60000;
    p->ckpt_connect_ms = 0;
    p->ckpt_keep = 1;
    if (!p->ckpt_store)
      *oom = 1;
  }
  for (int i = 0; i < p->n_nodes; i++)
    if (p->nodes[i].type == SL_NODE_SINK) {
      p->nodes[i].cfg.exactly_once = p->exactly_once;
      p->nodes[i].cfg.checkpointing = sinks_checkpointing;
    }
}

static int read_plan(lua_State *L, sl_plan_t *p) {
  int oom = 0;
  p->file = get_str(L, "file", &oom);
  p->name = get_str(L, "name", &oom);
  p->guarantee = get_str(L, "guarantee", &oom);
  p->admin = get_str(L, "admin", &oom);
  p->workers = get_int(L, "workers", 1);
  p->threads = get_int(L, "threads", p->workers + 1);
  p->max_parallelism = get_int(L, "max_parallelism", 128);
  p->n_nodes = get_int(L, "n_nodes", 0);
  p->n_insts = get_int(L, "n_instances", 0);
  p->n_chans = get_int(L, "n_channels", 0);
  p->nodes = calloc((size_t)p->n_nodes + 1, sizeof *p->nodes);
  p->insts = calloc((size_t)p->n_insts + 1, sizeof *p->insts);
  p->chans = calloc((size_t)p->n_chans + 1, sizeof *p->chans);
  if (!p->nodes || !p->insts || !p->chans)
    return -1;
  EACH(L, "nodes", p->n_nodes, read_node(L, &p->nodes[i_], p->name, &oom));
  EACH(L, "instances", p->n_insts, {
    read_inst(L, &p->insts[i_], &oom);
    read_chained(L, &p->insts[i_], p->n_insts, &oom);
  });
  EACH(L, "channels", p->n_chans, {
    sl_plan_chan_t *c = &p->chans[i_];
    c->cid = get_int(L, "cid", 0);
    c->from = get_int(L, "from", 0);
    c->to = get_int(L, "to", 0);
    c->producer = get_int(L, "producer", 0);
    c->consumer = get_int(L, "consumer", 0);
  });
  read_checkpoint(L, p, &oom);
  if (oom || fill_block(p))
    return -1;
  return 0;
}

/* ---- calling sluice.conf ---- */

/* Pushes opts = { workers, cores, cwd }. */
static void push_opts(lua_State *L, int workers) {
  char cwd[4096];
  lua_newtable(L);
  if (workers > 0) {
    lua_pushinteger(L, workers);
    lua_setfield(L, -2, "workers");
  }
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  lua_setfield(L, -2, "cores");
  char host[256];
  if (gethostname(host, sizeof host) == 0) {
    host[sizeof host - 1] = '\0';
    lua_pushstring(L, host);
    lua_setfield(L, -2, "hostname");
  }
  if (getcwd(cwd, sizeof cwd)) {
    lua_pushstring(L, cwd);
    lua_setfield(L, -2, "cwd");
  }
}

/* Joins the error list on top of the stack into one string. */
static char *join_errors(lua_State *L) {
  luaL_Buffer b;
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  int t = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    luaL_addvalue(&b);
    if (i < n)
      luaL_addchar(&b, '\n');
  }
  luaL_pushresult(&b);
  return strdup(lua_tostring(L, -1));
}

static int call_conf(lua_State *L, sl_plan_t *p, const char *path, int workers,
                     char **errors) {
  if (sl_lua_require(L, "sluice.conf")) {
    *errors = strdup(lua_tostring(L, -1));
    return -1;
  }
  int conf = lua_gettop(L);
  lua_getfield(L, conf, "load");
  lua_pushstring(L, path);
  push_opts(L, workers);
  if (lua_pcall(L, 2, 2, 0)) {
    *errors = strdup(lua_tostring(L, -1));
    return -1;
  }
  if (lua_isnil(L, -2)) {
    *errors = join_errors(L);
    return 1;
  }
  lua_pop(L, 1); /* the plan is on top */
  int plan = lua_gettop(L);
  if (read_plan(L, p)) {
    *errors = strdup("out of memory reading the plan");
    return -1;
  }
  lua_getfield(L, conf, "encode_plan");
  lua_pushvalue(L, plan);
  lua_getfield(L, conf, "describe");
  lua_pushvalue(L, plan);
  if (lua_pcall(L, 1, 1, 0) == 0)
    p->describe = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_pop(L, 1);
  if (lua_pcall(L, 1, 1, 0)) {
    *errors = strdup(lua_tostring(L, -1));
    return -1;
  }
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  p->blob = malloc(len ? len : 1);
  if (!p->blob) {
    *errors = strdup("out of memory");
    return -1;
  }
  memcpy(p->blob, s, len);
  p->blob_len = len;
  return 0;
}

int sl_plan_load(const char *path, int workers, sl_plan_t **out,
                 char **errors) {
  *out = NULL;
  *errors = NULL;
  sl_plan_t *p = calloc(1, sizeof *p);
  lua_State *L = sl_lua_create();
  if (!p || !L) {
    free(p);
    if (L)
      lua_close(L);
    *errors = strdup("out of memory");
    return -1;
  }
  int rc = call_conf(L, p, path, workers, errors);
  lua_close(L);
  if (rc) {
    sl_plan_destroy(p);
    return rc;
  }
  *out = p;
  return 0;
}

void sl_plan_destroy(sl_plan_t *p) {
  if (!p)
    return;
  for (int i = 0; p->nodes && i < p->n_nodes; i++) {
    sl_cfg_free(&p->nodes[i].cfg);
    free(p->nodes[i].script);
    free(p->nodes[i].chunkname);
  }
  for (int i = 0; p->insts && i < p->n_insts; i++) {
    sl_plan_inst_t *in = &p->insts[i];
    for (int j = 0; j < in->n_outs; j++)
      free(in->outs[j].ch);
    free(in->outs);
    free(in->in_ch);
    free(in->chained_to);
    free(in->out_ch);
    free(in->block_ch);
  }
  free(p->nodes);
  free(p->insts);
  free(p->chans);
  free(p->file);
  free(p->name);
  free(p->guarantee);
  free(p->describe);
  free(p->ckpt_store);
  free(p->admin);
  free(p->blob);
  free(p);
}
