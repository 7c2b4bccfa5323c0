/* worker.c - a worker thread (see worker.h).
 *
 * The loop: an async handle (wake) that other threads signal when a channel
 * into this worker has data, or a channel out of it has room; an idle handle
 * that keeps pumping while there is work; a timer for the scripts' earliest
 * processing-time timer. One pump visits every hosted instance that is not
 * blocked (its output can take more) and hands it a few batches. Lua is
 * entered once per batch (on_batch), never per record; the Lua side calls
 * back through the FFI (luaapi.h) to push its output batches.
 */
#include "worker.h"

#include "checkpoint.h"
#include "log.h"
#include "luaapi.h"
#include "luastate.h"
#include "sluice.h"
#include "watch.h"

#include "admin.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_BATCHES_PER_TURN 8
#define SL_PUBLISH_MS 100 /* publish the Lua side's counts this often */
#define SL_WMSG_QUERY 100 /* a state query from the admin server */

struct sl_worker_s {
  sl_core_t *core;
  int thread;
  uv_thread_t tid;
  uv_loop_t loop;
  uv_async_t wake;
  uv_idle_t idle;
  uv_timer_t timer;
  double timer_due; /* armed for this wall-clock ms, or -1 */
  atomic_int quit;
  lua_State *L;
  int fn_batch, fn_end, fn_timer, fn_snap, fn_restore, fn_open,
      fn_stats;                                 /* refs */
  int fn_prepare, fn_commit, fn_abort, fn_swap; /* reload */
  int fn_query;                                 /* admin: a key's state */
  int dirty;           /* counts changed since the last publish */
  uint64_t origin_ns;  /* creation of the channel batch being processed */
  double published_ms; /* when they were last published */
  atomic_uint_fast64_t lua_bytes; /* the Lua state's memory, published */
  uv_mutex_t mu;
  int mu_ready;
  struct sl_wmsg_s *inbox, *inbox_tail; /* reload messages (mu) */
  atomic_int mail;                      /* the inbox is not empty */
  uint8_t *swap_pending; /* [gid]: a committed reload waits for a barrier */
  sl_lua_api_t api;
  int *hosted, n_hosted, next; /* instance gids, round-robin cursor */
  int idling, started, loop_ready;
};

/* A reload message from the I/O thread (watch.h). */
typedef struct sl_wmsg_s {
  struct sl_wmsg_s *next;
  int kind;
  int gid; /* SL_WMSG_QUERY */
  uint64_t seq;
  char *script;
  char *src;
  size_t len;
} sl_wmsg_t;

/* Lua run once per worker: builds the instances; returns the entry points
 * (the C side then restores state into them, then opens them). */
static const char *boot_lua =
    "local blob, thread, api = ...\n"
    "local rt = require('sluice.runtime')\n"
    "local plan = require('sluice.conf').decode_plan(blob)\n"
    "local w = rt.new_worker(plan, thread, rt.ffi_port(api))\n"
    "return function(g, p, n, r) return w:on_batch(g, p, n, r) end,\n"
    "  function(g, c) return w:on_end(g, c) end,\n"
    "  function(now) return w:on_timer(now) end,\n"
    "  function(g) return w:snapshot_groups(g) end,\n"
    "  function(g, list) return w:restore_groups(g, list) end,\n"
    "  function() local ok, err = w:open()\n"
    "    if not ok then error(err, 0) end end,\n"
    "  function(s, src) return w:prepare_reload(s, src) end,\n"
    "  function(s, b) return w:commit_reload(s, b) end,\n"
    "  function(s) w:abort_reload(s) end,\n"
    "  function(g) return w:swap_ready(g) end,\n"
    "  function(g) local s = w:stats(g)\n"
    "    return s.records_in, s.records_out, s.errors, s.dead_letters end,\n"
    "  function(g, k) return w:state_json(g, k) end\n";

/* ---- the FFI surface (luaapi.h), called from this worker's Lua ---- */

static void api_push(void *ctx, int32_t cid, const uint8_t *data, size_t len,
                     uint32_t nrec) {
  sl_worker_t *w = ctx;
  sl_core_t *c = w->core;
  if (cid < 0 || cid >= c->plan->n_chans) {
    sl_log(SL_LOG_ERROR, "worker", "push to unknown channel %d", (int)cid);
    return;
  }
  if (sl_core_send(c, cid, SL_BATCH_DATA, data, len, nrec, 0)) {
    sl_log(SL_LOG_ERROR, "worker", "out of memory sending a batch");
    sl_core_fail(c, 3);
    return;
  }
  c->insts[c->plan->chans[cid].from].records_out += nrec;
}

static void api_observe(void *ctx, int32_t gid, uint32_t nrec,
                        uint64_t start_ns) {
  sl_worker_t *w = ctx;
  sl_core_t *c = w->core;
  if (gid < 0 || gid >= c->plan->n_insts)
    return;
  uint64_t now = uv_hrtime();
  /* from the creation of the channel batch this call is processing (the
   * records' origin), else from the run's own start (timers, close) */
  uint64_t origin = w->origin_ns ? w->origin_ns : start_ns;
  sl_histo_observe(&c->insts[gid].latency, now - origin, nrec);
  sl_counter_add(&c->insts[gid].busy_ns, now - start_ns);
}

static void api_log(int level, const char *component, const char *msg) {
  sl_log(level, component, "%s", msg);
}

static void api_fail(void *ctx, int code, const char *msg) {
  sl_worker_t *w = ctx;
  sl_log(SL_LOG_ERROR, "worker", "stopping the pipeline: %s", msg);
  sl_core_fail(w->core, code);
}

/* ---- calling into Lua ---- */

static double call_lua(sl_worker_t *w, int fn, int nargs) {
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
  lua_insert(L, -nargs - 1);
  if (lua_pcall(L, nargs, 1, 0)) {
    sl_log(SL_LOG_ERROR, "worker", "runtime error: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    sl_core_fail(w->core, 3);
    return -1;
  }
  double next = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
  lua_pop(L, 1);
  return next;
}

static void on_timer(uv_timer_t *t);

/* Arms the timer for the scripts' next due time (ms since the epoch). */
static void arm_timer(sl_worker_t *w, double due) {
  if (due < 0 || (w->timer_due >= 0 && w->timer_due <= due))
    return;
  double now = sl_now_ms();
  uint64_t delay = due > now ? (uint64_t)(due - now) : 0;
  w->timer_due = due;
  uv_timer_start(&w->timer, on_timer, delay, 0);
}

static void on_idle(uv_idle_t *h);

static void on_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  w->timer_due = -1;
  lua_pushnumber(w->L, sl_now_ms());
  arm_timer(w, call_lua(w, w->fn_timer, 1));
  w->dirty = 1; /* the next idle pump publishes */
  if (!w->idling) {
    w->idling = 1;
    uv_idle_start(&w->idle, on_idle);
  }
}

/* ---- counts for the admin server ---- */

/* Publishes every hosted instance's Lua-side counts and the Lua state's
 * memory (relaxed atomic stores; the admin server reads them). */
static void publish(sl_worker_t *w) {
  sl_core_t *c = w->core;
  lua_State *L = w->L;
  for (int i = 0; i < w->n_hosted; i++) {
    int gid = w->hosted[i];
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_stats);
    lua_pushinteger(L, gid);
    if (lua_pcall(L, 1, 4, 0)) {
      lua_pop(L, 1);
      continue;
    }
    sl_inst_rt_t *rt = &c->insts[gid];
    atomic_store_explicit(&rt->pub_in, (uint64_t)lua_tonumber(L, -4),
                          memory_order_relaxed);
    atomic_store_explicit(&rt->pub_out, (uint64_t)lua_tonumber(L, -3),
                          memory_order_relaxed);
    atomic_store_explicit(&rt->pub_errors, (uint64_t)lua_tonumber(L, -2),
                          memory_order_relaxed);
    atomic_store_explicit(&rt->pub_dead, (uint64_t)lua_tonumber(L, -1),
                          memory_order_relaxed);
    lua_pop(L, 4);
  }
  uint64_t bytes = (uint64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
                   (uint64_t)lua_gc(L, LUA_GCCOUNTB, 0);
  atomic_store_explicit(&w->lua_bytes, bytes, memory_order_relaxed);
  w->dirty = 0;
  w->published_ms = sl_now_ms();
}

uint64_t sl_worker_lua_bytes(sl_worker_t *w) {
  return atomic_load_explicit(&w->lua_bytes, memory_order_relaxed);
}

/* ---- snapshots ---- */

/* Copies the { [kg] = bytes } table on top of the stack into an ack. */
static sl_ack_t *ack_from_table(lua_State *L, uint64_t id, int gid) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    n++;
    lua_pop(L, 1);
  }
  sl_ack_t *a = sl_ack_create(id, gid, n);
  int i = 0;
  lua_pushnil(L);
  while (a && lua_next(L, -2)) {
    size_t len;
    const char *bytes = lua_tolstring(L, -1, &len);
    sl_ack_part_t *p = &a->parts[i++];
    p->kg = (int32_t)lua_tointeger(L, -2);
    p->blob = malloc(len ? len : 1);
    if (!p->blob || !bytes) {
      sl_ack_destroy(a);
      a = NULL;
      lua_pop(L, 2);
      break;
    }
    memcpy(p->blob, bytes, len);
    p->len = len;
    lua_pop(L, 1);
  }
  return a;
}

/* Snapshots instance gid's keyed state for checkpoint id and acks it. */
static void snapshot(sl_worker_t *w, int gid, uint64_t id) {
  sl_core_t *c = w->core;
  if (!c->coord || (id == SL_CKPT_FINAL && !sl_checkpoint_at_end(c)))
    return;
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_snap);
  lua_pushinteger(L, gid);
  if (lua_pcall(L, 1, 1, 0)) {
    sl_log(SL_LOG_ERROR, "checkpoint", "snapshot failed: %s",
           lua_tostring(L, -1));
    lua_pop(L, 1);
    sl_core_fail(c, 3);
    return;
  }
  sl_ack_t *a = lua_istable(L, -1) ? ack_from_table(L, id, gid) : NULL;
  lua_pop(L, 1);
  if (!a) {
    sl_log(SL_LOG_ERROR, "checkpoint", "out of memory taking a snapshot");
    sl_core_fail(c, 3);
    return;
  }
  sl_checkpoint_ack(c, a);
}

/* A committed reload of gid's script waited for this barrier (after the
 * snapshot, so the checkpoint holds the old version's state): swap now. */
static void swap_if_pending(sl_worker_t *w, int gid) {
  if (!w->swap_pending[gid])
    return;
  w->swap_pending[gid] = 0;
  lua_pushinteger(w->L, gid);
  arm_timer(w, call_lua(w, w->fn_swap, 1));
}

/* Barrier id has arrived from every input of gid: snapshot, pass it on. */
static void barrier_complete(sl_worker_t *w, int gid, uint64_t id) {
  sl_core_t *c = w->core;
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  snapshot(w, gid, id);
  sl_core_mark(c, gid, SL_BATCH_BARRIER, id, 0);
  sl_align_done(c, gid);
  for (int i = 0; i < pi->n_chained_to; i++)
    if (sl_align_barrier(c, pi->chained_to[i], -1, id))
      barrier_complete(w, pi->chained_to[i], id);
  swap_if_pending(w, gid);
}

/* ---- instances ---- */

static void end_instance(sl_worker_t *w, int gid);

/* An input of gid ended (in_index -1: a chained upstream). */
static void end_input(sl_worker_t *w, int gid, int in_index, int closing) {
  sl_inst_rt_t *rt = &w->core->insts[gid];
  if (!closing)
    rt->closing = 0;
  if (sl_align_end(w->core, gid, in_index))
    barrier_complete(w, gid, rt->align.id);
  if (--rt->open_inputs == 0)
    end_instance(w, gid);
}

/* All inputs ended: close (if the input ended), forward END, chained next. */
static void end_instance(sl_worker_t *w, int gid) {
  sl_core_t *c = w->core;
  sl_inst_rt_t *rt = &c->insts[gid];
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  rt->ended = 1;
  swap_if_pending(w, gid); /* END is a barrier too: close runs the new code */
  lua_pushinteger(w->L, gid);
  lua_pushboolean(w->L, rt->closing);
  arm_timer(w, call_lua(w, w->fn_end, 2));
  snapshot(w, gid, SL_CKPT_FINAL); /* the state after close: final */
  sl_core_mark(c, gid, SL_BATCH_END, 0, (uint32_t)rt->closing);
  sl_core_done(c);
  for (int i = 0; i < pi->n_chained_to; i++)
    end_input(w, pi->chained_to[i], -1, rt->closing);
}

static void handle_batch(sl_worker_t *w, int gid, int in_index, sl_batch_t *b) {
  sl_inst_rt_t *rt = &w->core->insts[gid];
  if (b->kind == SL_BATCH_END) {
    end_input(w, gid, in_index, (int)b->closing);
  } else if (b->kind == SL_BATCH_BARRIER) {
    if (sl_align_barrier(w->core, gid, in_index, b->id))
      barrier_complete(w, gid, b->id);
  } else if (!rt->ended &&
             atomic_load(&w->core->exit_code) != SL_EXIT_RUNTIME) {
    rt->records_in += b->nrec;
    rt->batches_in++;
    w->dirty = 1;
    lua_pushinteger(w->L, gid);
    lua_pushlightuserdata(w->L, b->data);
    lua_pushinteger(w->L, (lua_Integer)b->len);
    lua_pushinteger(w->L, b->nrec);
    uint64_t t0 = uv_hrtime();
    w->origin_ns = b->t_ns; /* for the instances it runs locally */
    arm_timer(w, call_lua(w, w->fn_batch, 4));
    w->origin_ns = 0;
    uint64_t t1 = uv_hrtime();
    sl_histo_observe(&rt->latency, t1 - b->t_ns, b->nrec);
    sl_counter_add(&rt->busy_ns, t1 - t0);
  }
  sl_batch_destroy(b);
}

/* Feeds instance gid a few batches per input channel; 1 if any. */
static int feed(sl_worker_t *w, int gid) {
  sl_core_t *c = w->core;
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  int work = 0;
  for (int i = 0; i < pi->n_in_ch; i++) {
    sl_channel_t *ch = &c->chans[pi->in_ch[i]];
    for (int k = 0; k < SL_BATCHES_PER_TURN; k++) {
      if (sl_core_blocked(c, gid) || sl_align_held(c, gid) ||
          !sl_align_may_read(c, gid, i))
        break;
      sl_batch_t *b = sl_channel_pop(ch);
      if (!b)
        break;
      work = 1;
      handle_batch(w, gid, i, b);
    }
  }
  return work;
}

/* ---- reload messages (watch.h) ---- */

/* Appends m to the worker's inbox and wakes it. Any thread. */
static void post(sl_worker_t *w, sl_wmsg_t *m) {
  uv_mutex_lock(&w->mu);
  if (w->inbox_tail)
    w->inbox_tail->next = m;
  else
    w->inbox = m;
  w->inbox_tail = m;
  atomic_store(&w->mail, 1);
  uv_mutex_unlock(&w->mu);
  uv_async_send(&w->wake);
}

int sl_worker_post(sl_worker_t *w, int kind, uint64_t seq, const char *script,
                   const char *src, size_t len) {
  sl_wmsg_t *m = calloc(1, sizeof *m);
  if (!m)
    return -1;
  m->kind = kind;
  m->seq = seq;
  m->script = strdup(script);
  m->src = src ? malloc(len ? len : 1) : NULL;
  if (!m->script || (src && !m->src)) {
    free(m->script);
    free(m->src);
    free(m);
    return -1;
  }
  if (src)
    memcpy(m->src, src, len);
  m->len = len;
  post(w, m);
  return 0;
}

int sl_worker_query(sl_worker_t *w, int gid, uint64_t seq, const char *key,
                    size_t len) {
  sl_wmsg_t *m = calloc(1, sizeof *m);
  if (!m)
    return -1;
  m->kind = SL_WMSG_QUERY;
  m->gid = gid;
  m->seq = seq;
  m->script = strdup("");
  m->src = malloc(len ? len : 1);
  if (!m->script || !m->src) {
    free(m->script);
    free(m->src);
    free(m);
    return -1;
  }
  memcpy(m->src, key, len);
  m->len = len;
  post(w, m);
  return 0;
}

/* A state query: the key's state as JSON text (or none), to the admin. */
static void do_query(sl_worker_t *w, sl_wmsg_t *m) {
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_query);
  lua_pushinteger(L, m->gid);
  lua_pushlstring(L, m->src, m->len);
  if (lua_pcall(L, 2, 1, 0)) {
    sl_admin_reply(w->core, m->seq, 500, lua_tostring(L, -1));
  } else if (lua_isstring(L, -1)) {
    sl_admin_reply(w->core, m->seq, 200, lua_tostring(L, -1));
  } else {
    sl_admin_reply(w->core, m->seq, 404, NULL);
  }
  lua_pop(L, 1);
}

static void free_msgs(sl_wmsg_t *m) {
  while (m) {
    sl_wmsg_t *next = m->next;
    free(m->script);
    free(m->src);
    free(m);
    m = next;
  }
}

static int hosts_script(sl_worker_t *w, int gid, const char *script) {
  const sl_plan_t *p = w->core->plan;
  const char *s = p->nodes[p->insts[gid].node].script;
  return s && !strcmp(s, script);
}

/* PREPARE: compile + open aside, answer the I/O thread. */
static void do_prepare(sl_worker_t *w, sl_wmsg_t *m) {
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_prepare);
  lua_pushstring(L, m->script);
  lua_pushlstring(L, m->src, m->len);
  const char *err = NULL;
  if (lua_pcall(L, 2, 2, 0)) {
    err = lua_tostring(L, -1);
    lua_pushnil(L); /* two values, as below */
  } else if (!lua_toboolean(L, -2)) {
    err = lua_isstring(L, -1) ? lua_tostring(L, -1) : "prepare failed";
  }
  sl_watch_reply(w->core, m->seq, w->thread, err ? err : NULL);
  lua_pop(L, 2);
}

/* COMMIT: swap now, or (checkpointing) at each instance's next barrier. */
static void do_commit(sl_worker_t *w, sl_wmsg_t *m) {
  sl_core_t *c = w->core;
  int at_barrier = sl_checkpoint_periodic(c);
  if (at_barrier)
    for (int i = 0; i < w->n_hosted; i++) {
      int gid = w->hosted[i];
      if (!c->insts[gid].ended && hosts_script(w, gid, m->script))
        w->swap_pending[gid] = 1;
    }
  lua_pushstring(w->L, m->script);
  lua_pushboolean(w->L, at_barrier);
  arm_timer(w, call_lua(w, w->fn_commit, 2));
}

static void drain_inbox(sl_worker_t *w) {
  uv_mutex_lock(&w->mu);
  sl_wmsg_t *m = w->inbox;
  w->inbox = w->inbox_tail = NULL;
  atomic_store(&w->mail, 0);
  uv_mutex_unlock(&w->mu);
  for (sl_wmsg_t *x = m; x; x = x->next) {
    if (x->kind == SL_WMSG_PREPARE) {
      do_prepare(w, x);
    } else if (x->kind == SL_WMSG_COMMIT) {
      do_commit(w, x);
    } else if (x->kind == SL_WMSG_QUERY) {
      do_query(w, x);
    } else {
      lua_pushstring(w->L, x->script);
      call_lua(w, w->fn_abort, 1);
    }
  }
  free_msgs(m);
}

static int pump(sl_worker_t *w) {
  int work = 0;
  if (atomic_load(&w->mail))
    drain_inbox(w);
  for (int i = 0; i < w->n_hosted; i++)
    sl_core_drain(w->core, w->hosted[i]);
  for (int i = 0; i < w->n_hosted; i++) {
    int gid = w->hosted[(w->next + i) % w->n_hosted];
    work |= feed(w, gid);
  }
  w->next = w->n_hosted ? (w->next + 1) % w->n_hosted : 0;
  return work;
}

/* ---- the loop ---- */

static void close_all(sl_worker_t *w) {
  uv_close((uv_handle_t *)&w->idle, NULL);
  uv_close((uv_handle_t *)&w->timer, NULL);
  uv_close((uv_handle_t *)&w->wake, NULL);
}

static void on_idle(uv_idle_t *h) {
  sl_worker_t *w = h->data;
  if (!pump(w)) {
    if (w->dirty)
      publish(w);
    uv_idle_stop(&w->idle);
    w->idling = 0;
  } else if (w->dirty && sl_now_ms() - w->published_ms >= SL_PUBLISH_MS) {
    publish(w);
  }
}

static void on_wake(uv_async_t *h) {
  sl_worker_t *w = h->data;
  if (atomic_load(&w->quit)) {
    close_all(w);
    return;
  }
  if (!w->idling) {
    w->idling = 1;
    uv_idle_start(&w->idle, on_idle);
  }
}

static void thread_main(void *arg) {
  sl_worker_t *w = arg;
  w->idling = 1;
  uv_idle_start(&w->idle, on_idle);
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ---- life cycle ---- */

static int collect_hosted(sl_worker_t *w) {
  const sl_plan_t *p = w->core->plan;
  w->hosted = calloc((size_t)p->n_insts + 1, sizeof(int));
  if (!w->hosted)
    return -1;
  for (int g = 0; g < p->n_insts; g++)
    if (p->insts[g].thread == w->thread)
      w->hosted[w->n_hosted++] = g;
  return 0;
}

static int init_loop(sl_worker_t *w) {
  if (uv_loop_init(&w->loop))
    return -1;
  w->loop_ready = 1;
  uv_async_init(&w->loop, &w->wake, on_wake);
  uv_idle_init(&w->loop, &w->idle);
  uv_timer_init(&w->loop, &w->timer);
  w->wake.data = w->idle.data = w->timer.data = w;
  return 0;
}

static int boot(sl_worker_t *w, char **err) {
  lua_State *L = w->L;
  const sl_plan_t *p = w->core->plan;
  if (luaL_loadbuffer(L, boot_lua, strlen(boot_lua), "=worker")) {
    *err = strdup(lua_tostring(L, -1));
    return -1;
  }
  lua_pushlstring(L, p->blob, p->blob_len);
  lua_pushinteger(L, w->thread);
  lua_pushlightuserdata(L, &w->api);
  if (lua_pcall(L, 3, 12, 0)) {
    *err = strdup(lua_tostring(L, -1));
    return -1;
  }
  w->fn_query = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_stats = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_swap = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_abort = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_commit = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_prepare = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_open = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_restore = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_snap = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_timer = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_end = luaL_ref(L, LUA_REGISTRYINDEX);
  w->fn_batch = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Gives every hosted operator instance the key groups it now owns. */
static int restore_all(sl_worker_t *w, char **err) {
  sl_core_t *c = w->core;
  lua_State *L = w->L;
  for (int i = 0; i < w->n_hosted; i++) {
    int gid = w->hosted[i];
    const sl_plan_inst_t *pi = &c->plan->insts[gid];
    const sl_plan_node_t *node = &c->plan->nodes[pi->node];
    const sl_ckpt_entry_t **es;
    int n;
    sl_checkpoint_restore_state(c, node->cfg.name, pi->index, node->parallelism,
                                &es, &n);
    if (n == 0)
      continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_restore);
    lua_pushinteger(L, gid);
    lua_createtable(L, n, 0);
    for (int j = 0; j < n; j++) {
      lua_pushlstring(L, (const char *)es[j]->blob, es[j]->len);
      lua_rawseti(L, -2, j + 1);
    }
    if (lua_pcall(L, 2, 0, 0)) {
      *err = strdup(lua_tostring(L, -1));
      return -1;
    }
  }
  return 0;
}

static int open_all(sl_worker_t *w, char **err) {
  lua_rawgeti(w->L, LUA_REGISTRYINDEX, w->fn_open);
  if (lua_pcall(w->L, 0, 0, 0)) {
    *err = strdup(lua_tostring(w->L, -1));
    return -1;
  }
  return 0;
}

sl_worker_t *sl_worker_create(sl_core_t *c, int thread, char **err) {
  *err = NULL;
  sl_worker_t *w = calloc(1, sizeof *w);
  if (!w) {
    *err = strdup("out of memory");
    return NULL;
  }
  w->core = c;
  w->thread = thread;
  w->timer_due = -1;
  atomic_init(&w->quit, 0);
  atomic_init(&w->mail, 0);
  atomic_init(&w->lua_bytes, 0);
  w->api = (sl_lua_api_t){.ctx = w,
                          .push = api_push,
                          .hash = sl_hash_bytes,
                          .log = api_log,
                          .fail = api_fail,
                          .now_ms = sl_now_ms,
                          .hrtime = uv_hrtime,
                          .observe = api_observe};
  uv_mutex_init(&w->mu);
  w->mu_ready = 1;
  w->swap_pending = calloc((size_t)c->plan->n_insts + 1, 1);
  w->L = sl_lua_create();
  if (!w->L || !w->swap_pending || collect_hosted(w) || init_loop(w)) {
    *err = strdup("out of memory creating a worker");
    sl_worker_destroy(w);
    return NULL;
  }
  if (boot(w, err) || restore_all(w, err) || open_all(w, err)) {
    sl_worker_destroy(w);
    return NULL;
  }
  publish(w);
  return w;
}

int sl_worker_start(sl_worker_t *w) {
  if (uv_thread_create(&w->tid, thread_main, w))
    return -1;
  w->started = 1;
  return 0;
}

void sl_worker_stop(sl_worker_t *w) {
  atomic_store(&w->quit, 1);
  uv_async_send(&w->wake);
}

void sl_worker_join(sl_worker_t *w) {
  if (w->started)
    uv_thread_join(&w->tid);
  w->started = 0;
}

void sl_worker_destroy(sl_worker_t *w) {
  if (!w)
    return;
  if (w->loop_ready) {
    if (!uv_is_closing((uv_handle_t *)&w->wake))
      close_all(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
  }
  if (w->L)
    lua_close(w->L);
  free(w->hosted);
  free(w->swap_pending);
  if (w->mu_ready) {
    free_msgs(w->inbox);
    uv_mutex_destroy(&w->mu);
  }
  free(w);
}

int sl_worker_stats(sl_worker_t *w, int gid, uint64_t *in, uint64_t *out,
                    uint64_t *errors) {
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_stats);
  lua_pushinteger(L, gid);
  if (lua_pcall(L, 1, 3, 0)) {
    lua_pop(L, 1);
    return -1;
  }
  *in = (uint64_t)lua_tonumber(L, -3);
  *out = (uint64_t)lua_tonumber(L, -2);
  *errors = (uint64_t)lua_tonumber(L, -1);
  lua_pop(L, 3);
  return 0;
}

uv_async_t *sl_worker_wake(sl_worker_t *w) {
  return &w->wake;
}
