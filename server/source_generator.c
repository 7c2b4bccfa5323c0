/* source_generator.c - the `generator` source: deterministic test records.
 *
 * Runs on the I/O thread. Owns a uv_timer_t (pacing at `rate`) and a
 * uv_idle_t (rate 0: as fast as possible). Record i (1-based) has the value
 * "i" in decimal and no key, so any run, and any replay from record i, gives
 * the same records. `count` records then the source ends (closing = 1);
 * count < 0 never ends.
 *
 * rate > 0: a timer ticks every 10 ms and emits the records due since the
 * pacing started (at most a few ticks' worth at once: a loop that fell behind
 * restarts its pacing rather than bursting). rate 0: the idle handle emits a
 * chunk of 4096 records per loop turn, so sockets, timers and signals are
 * still served between chunks. Either way the source stops within a chunk as
 * soon as the core pauses it, and resume restarts the pacing from then.
 *
 * Replay: `offset` is the number of the next record to emit; `seek(n)`,
 * called before start, makes the first record "n", so the output goes on
 * exactly where the checkpoint left it. With a count, a source seeked past
 * it ends at once.
 */
#include "endpoint.h"
#include "log.h"
#include "luaapi.h"

#include <stdlib.h>

#define GEN_TICK_MS 10
#define GEN_CHUNK 4096

typedef struct gen_s {
  sl_source_t *s;
  uv_timer_t timer;
  uv_idle_t idle;
  uint64_t next;    /* number of the next record, from 1 */
  uint64_t base_n;  /* pacing: records emitted when it started */
  uint64_t base_ms; /* pacing: uv_now() when it started */
  int running;      /* the timer or the idle handle is active */
  int pending;      /* handles whose close callback is due */
  int started;      /* start ran: the handles are initialized */
  int64_t count;    /* settings: records (-1 = unbounded) */
  double rate;      /* records per second, 0 = as fast as possible */
  sl_source_cb done;
} gen_t;

/* Writes v in decimal at the end of buf[0..24); returns where it starts. */
static char *gen_u64(char *end, uint64_t v) {
  char *p = end;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return p;
}

static int gen_exhausted(gen_t *g) {
  int64_t count = g->count;
  return count >= 0 && g->next > (uint64_t)count;
}

static void gen_halt(gen_t *g) {
  uv_timer_stop(&g->timer);
  uv_idle_stop(&g->idle);
  g->running = 0;
}

/* Emits up to max records; ends the source after the last one. */
static void gen_emit(gen_t *g, uint64_t max) {
  sl_source_t *s = g->s;
  char num[24];
  double now = sl_now_ms();
  for (uint64_t i = 0; i < max && !gen_exhausted(g) && !s->paused; i++) {
    char *p = gen_u64(num + sizeof num, g->next++);
    sl_source_emit(s, p, (size_t)(num + sizeof num - p), now);
  }
  if (gen_exhausted(g)) {
    gen_halt(g);
    sl_source_end(s, 1);
    return;
  }
  sl_source_flush(s);
  if (s->paused)
    gen_halt(g);
}

/* Records due at `rate` since the pacing started, at most a few ticks'
 * worth; a loop that fell behind restarts its pacing instead of bursting. */
static uint64_t gen_due(gen_t *g) {
  double rate = g->rate;
  uint64_t now = uv_now(g->s->loop);
  uint64_t want = (uint64_t)((double)(now - g->base_ms) * rate / 1000.0);
  uint64_t done = (g->next - 1) - g->base_n;
  uint64_t cap = (uint64_t)(rate * 4 * GEN_TICK_MS / 1000.0) + GEN_CHUNK;
  uint64_t due = want > done ? want - done : 0;
  if (due > cap) {
    due = cap;
    g->base_ms = now;
    g->base_n = (g->next - 1) + cap;
  }
  return due;
}

static void gen_on_tick(uv_timer_t *t) {
  gen_t *g = t->data;
  uint64_t due = gen_due(g);
  if (due > 0 || gen_exhausted(g))
    gen_emit(g, due);
}

static void gen_on_idle(uv_idle_t *h) {
  gen_emit(h->data, GEN_CHUNK);
}

/* (Re)starts producing, pacing from now. */
static void gen_run(gen_t *g) {
  sl_source_t *s = g->s;
  if (g->running || s->paused || s->ended)
    return;
  g->running = 1;
  g->base_ms = uv_now(s->loop);
  g->base_n = g->next - 1;
  if (g->rate > 0)
    uv_timer_start(&g->timer, gen_on_tick, GEN_TICK_MS, GEN_TICK_MS);
  else
    uv_idle_start(&g->idle, gen_on_idle);
}

/* The impl, made by seek or start (whichever runs first); its handles are
 * initialized by start. NULL after an ERROR log. */
static gen_t *gen_impl(sl_source_t *s) {
  if (!s->impl) {
    gen_t *g = calloc(1, sizeof *g);
    if (!g) {
      sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
      return NULL;
    }
    g->s = s;
    g->next = 1;
    g->count = (int64_t)sl_cfg_num(s->cfg, "count", -1);
    g->rate = sl_cfg_num(s->cfg, "rate", 0);
    s->impl = g;
  }
  return s->impl;
}

static int gen_start(sl_source_t *s) {
  gen_t *g = gen_impl(s);
  if (!g)
    return -1;
  if (!(g->rate >= 0)) { /* negative or NaN */
    sl_log(SL_LOG_ERROR, "source", "'%s': rate must be >= 0", s->cfg->name);
    free(g);
    s->impl = NULL;
    return -1;
  }
  uv_timer_init(s->loop, &g->timer);
  uv_idle_init(s->loop, &g->idle);
  g->timer.data = g->idle.data = g;
  g->started = 1;
  gen_run(g);
  return 0;
}

static int64_t gen_offset(sl_source_t *s) {
  gen_t *g = s->impl;
  return g ? (int64_t)g->next : 1;
}

/* A bounded generator's records still to come; unbounded: not known. */
static int64_t gen_lag(sl_source_t *s) {
  gen_t *g = s->impl;
  int64_t count = (int64_t)sl_cfg_num(s->cfg, "count", -1);
  if (count < 0)
    return -1;
  int64_t done = g ? (int64_t)g->next - 1 : 0;
  return done >= count ? 0 : count - done;
}

static int gen_seek(sl_source_t *s, int64_t offset) {
  gen_t *g = gen_impl(s);
  if (!g)
    return -1;
  if (offset < 1 || g->started) {
    sl_log(SL_LOG_ERROR, "source", "'%s': cannot seek to record %lld%s",
           s->cfg->name, (long long)offset,
           g->started ? ": already started" : "");
    return -1;
  }
  g->next = (uint64_t)offset;
  return 0;
}

/* The impl once started, else NULL. */
static gen_t *gen_live(sl_source_t *s) {
  gen_t *g = s->impl;
  return g && g->started ? g : NULL;
}

static void gen_pause(sl_source_t *s) {
  if (gen_live(s))
    gen_halt(s->impl);
}

static void gen_resume(sl_source_t *s) {
  if (gen_live(s))
    gen_run(s->impl);
}

static void gen_stop(sl_source_t *s) {
  if (gen_live(s))
    gen_halt(s->impl);
  if (!s->ended)
    sl_source_end(s, 0);
}

static void gen_on_closed(uv_handle_t *h) {
  gen_t *g = h->data;
  if (--g->pending > 0)
    return;
  sl_source_t *s = g->s;
  sl_source_cb done = g->done;
  free(g);
  done(s);
}

static void gen_close(sl_source_t *s, sl_source_cb done) {
  gen_t *g = s->impl;
  s->impl = NULL;
  if (!g || !g->started) { /* also an impl seek made, never started */
    free(g);
    done(s);
    return;
  }
  gen_halt(g);
  g->done = done;
  g->pending = 2;
  uv_close((uv_handle_t *)&g->timer, gen_on_closed);
  uv_close((uv_handle_t *)&g->idle, gen_on_closed);
}

const sl_source_vt_t sl_source_generator_vt = {
    .kind = "generator",
    .start = gen_start,
    .pause = gen_pause,
    .resume = gen_resume,
    .stop = gen_stop,
    .close = gen_close,
    .offset = gen_offset,
    .seek = gen_seek,
    .lag = gen_lag,
    .lag_unit = "records",
};
