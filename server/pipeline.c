/* pipeline.c - a running pipeline: start-up, the I/O thread, shutdown.
 *
 * The main thread loads the plan, builds every channel and worker (running
 * each operator's `open`), starts the sources and sinks, starts the worker
 * threads, and then becomes the I/O thread: its libuv loop serves the
 * sources, the sinks, the signals and the bookkeeping of which instances have
 * finished. When every operator instance and sink has finished (or a failure
 * or a second signal cuts it short) it stops the workers, closes every
 * handle it owns, and returns the exit code.
 */
#include "sluice.h"

#include "admin.h"
#include "checkpoint.h"
#include "confwatch.h"
#include "core.h"
#include "log.h"
#include "luaapi.h"
#include "progress.h"
#include "watch.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_RING_BATCHES 64
#define SL_FLUSH_MS 100
#define SL_STOP_DEADLINE_MS 10000

const char *sl_version(void) {
#ifdef SLUICE_VERSION
  return SLUICE_VERSION;
#else
  return "dev";
#endif
}

/* ---- helpers shared by the core's files (core.h) ---- */

uv_async_t *sl_core_wake_of(sl_core_t *c, int thread) {
  return thread == 0 ? &c->wake : sl_worker_wake(c->workers[thread]);
}

void sl_core_fail(sl_core_t *c, int code) {
  int zero = 0;
  atomic_compare_exchange_strong(&c->exit_code, &zero, code);
  uv_async_send(&c->wake);
}

void sl_core_done(sl_core_t *c) {
  if (atomic_fetch_sub(&c->live, 1) == 1)
    uv_async_send(&c->wake);
}

int sl_core_send(sl_core_t *c, int cid, uint32_t kind, const void *data,
                 size_t len, uint32_t nrec, uint32_t closing) {
  sl_batch_t *b = sl_batch_create(kind, data, len, nrec);
  if (!b)
    return -1;
  b->closing = closing;
  sl_channel_push(&c->chans[cid], b);
  return 0;
}

void sl_core_mark(sl_core_t *c, int gid, uint32_t kind, uint64_t id,
                  uint32_t closing) {
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  for (int i = 0; i < pi->n_out_ch; i++) {
    sl_batch_t *b = sl_batch_create(kind, NULL, 0, 0);
    if (!b) {
      sl_core_fail(c, 3);
      return;
    }
    b->id = id;
    b->closing = closing;
    sl_channel_push(&c->chans[pi->out_ch[i]], b);
  }
}

int sl_core_blocked(sl_core_t *c, int gid) {
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  for (int i = 0; i < pi->n_block_ch; i++)
    if (!sl_channel_clear(&c->chans[pi->block_ch[i]]))
      return 1;
  return 0;
}

void sl_core_drain(sl_core_t *c, int gid) {
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  for (int i = 0; i < pi->n_out_ch; i++) {
    sl_channel_t *ch = &c->chans[pi->out_ch[i]];
    if (!sl_channel_clear(ch))
      sl_channel_drain(ch);
  }
}

/* ---- building ---- */

static int build_channels(sl_core_t *c) {
  const sl_plan_t *p = c->plan;
  c->chans = calloc((size_t)p->n_chans + 1, sizeof *c->chans);
  c->insts = calloc((size_t)p->n_insts + 1, sizeof *c->insts);
  if (!c->chans || !c->insts)
    return -1;
  for (int i = 0; i < p->n_chans; i++) {
    if (sl_channel_init(&c->chans[i], i, SL_RING_BATCHES))
      return -1;
    c->chans[i].from = p->chans[i].from;
    c->chans[i].to = p->chans[i].to;
  }
  for (int g = 0; g < p->n_insts; g++) {
    c->insts[g].open_inputs = p->insts[g].n_inputs;
    c->insts[g].closing = 1;
    if (p->nodes[p->insts[g].node].type != SL_NODE_SOURCE)
      atomic_fetch_add(&c->live, 1);
  }
  return 0;
}

static void wire_wakes(sl_core_t *c) {
  for (int i = 0; i < c->plan->n_chans; i++) {
    c->chans[i].producer_wake = sl_core_wake_of(c, c->plan->chans[i].producer);
    c->chans[i].consumer_wake = sl_core_wake_of(c, c->plan->chans[i].consumer);
  }
}

static int build_workers(sl_core_t *c) {
  int n = c->plan->workers;
  c->workers = calloc((size_t)n + 1, sizeof *c->workers);
  if (!c->workers)
    return -1;
  for (int t = 1; t <= n; t++) {
    char *err = NULL;
    c->workers[t] = sl_worker_create(c, t, &err);
    if (!c->workers[t]) {
      sl_log(SL_LOG_ERROR, "pipeline", "%s", err ? err : "worker failed");
      free(err);
      return -1;
    }
  }
  return 0;
}

/* ---- the I/O thread's loop ---- */

static void shutdown_all(sl_core_t *c);

static void begin_stop(sl_core_t *c, const char *why);

static void on_io_idle(uv_idle_t *h) {
  sl_core_t *c = h->data;
  if (c->shutting_down)
    return;
  int code = atomic_load(&c->exit_code);
  if (code == SL_EXIT_STOPPED && !c->stopping)
    begin_stop(c, "an operator with on_error = \"stop\" failed");
  int owed = sl_checkpoint_pump(c); /* a final checkpoint still to store */
  sl_watch_pump(c);
  sl_admin_pump(c);
  if (c->force || (code && code != SL_EXIT_STOPPED) ||
      (atomic_load(&c->live) == 0 && !owed)) {
    shutdown_all(c);
    return;
  }
  sl_core_sources_pump(c);
  if (!sl_core_sinks_pump(c))
    uv_idle_stop(&c->idle);
}

static void on_io_wake(uv_async_t *h) {
  sl_core_t *c = h->data;
  if (!c->shutting_down && !c->restoring)
    uv_idle_start(&c->idle, on_io_idle);
}

static void on_flush(uv_timer_t *t) {
  sl_core_sinks_flush(t->data);
}

/* Cuts the drain short: shut down now, exit 3 unless a code is set. */
static void force_exit(sl_core_t *c) {
  c->force = 1;
  sl_core_fail(c, SL_EXIT_RUNTIME);
}

static void on_deadline(uv_timer_t *t) {
  sl_core_t *c = t->data;
  sl_log(SL_LOG_ERROR, "pipeline", "did not drain within %d ms; exiting",
         SL_STOP_DEADLINE_MS);
  force_exit(c);
}

/* Stop the sources and let everything in flight drain (close does not run,
 * since the input has not ended). */
static void begin_stop(sl_core_t *c, const char *why) {
  sl_log(SL_LOG_INFO, "pipeline", "%s: stopping sources, draining", why);
  c->stopping = 1;
  uv_timer_start(&c->deadline, on_deadline, SL_STOP_DEADLINE_MS, 0);
  sl_core_sources_stop(c);
  uv_idle_start(&c->idle, on_io_idle);
}

void sl_core_restart(sl_core_t *c, const char *why) {
  begin_stop(c, why);
}

static void on_signal(uv_signal_t *s, int signum) {
  sl_core_t *c = s->data;
  if (c->stopping) {
    sl_log(SL_LOG_WARN, "pipeline", "second signal: exiting now");
    force_exit(c);
    return;
  }
  begin_stop(c, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void init_io(sl_core_t *c) {
  uv_async_init(&c->loop, &c->wake, on_io_wake);
  uv_idle_init(&c->loop, &c->idle);
  uv_signal_init(&c->loop, &c->sigint);
  uv_signal_init(&c->loop, &c->sigterm);
  uv_timer_init(&c->loop, &c->flush_timer);
  uv_timer_init(&c->loop, &c->deadline);
  c->wake.data = c->idle.data = c->sigint.data = c->sigterm.data = c;
  c->flush_timer.data = c->deadline.data = c;
}

static void close_io(sl_core_t *c) {
  uv_handle_t *hs[] = {
      (uv_handle_t *)&c->wake,        (uv_handle_t *)&c->idle,
      (uv_handle_t *)&c->sigint,      (uv_handle_t *)&c->sigterm,
      (uv_handle_t *)&c->flush_timer, (uv_handle_t *)&c->deadline};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], NULL);
}

static void stop_workers(sl_core_t *c) {
  for (int t = 1; c->workers && t <= c->plan->workers; t++)
    if (c->workers[t])
      sl_worker_stop(c->workers[t]);
  for (int t = 1; c->workers && t <= c->plan->workers; t++)
    if (c->workers[t])
      sl_worker_join(c->workers[t]);
}

/* Finished, failed or cut short: stop threads, close every handle. */
static void shutdown_all(sl_core_t *c) {
  c->shutting_down = 1;
  if (atomic_load(&c->live) != 0 && !atomic_load(&c->exit_code))
    sl_core_fail(c, SL_EXIT_RUNTIME);
  sl_core_sinks_flush(c);
  sl_checkpoint_stop(c);
  sl_admin_stop(c);
  sl_watch_stop(c);
  sl_confwatch_stop(c);
  sl_progress_stop(c);
  stop_workers(c);
  sl_core_sources_close(c);
  sl_core_sinks_close(c);
  close_io(c);
}

/* ---- run ---- */

static void log_summary(sl_core_t *c, double ms) {
  const sl_plan_t *p = c->plan;
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    uint64_t in = 0, out = 0, errors = 0;
    for (int i = 0; i < node->parallelism; i++) {
      int gid = node->first_gid + i;
      uint64_t a = 0, b = 0, e = 0;
      if (node->type == SL_NODE_OPERATOR &&
          sl_worker_stats(c->workers[p->insts[gid].thread], gid, &a, &b, &e) ==
              0) {
        in += a, out += b, errors += e;
      } else {
        const sl_inst_rt_t *rt = &c->insts[gid];
        if (rt->source) /* what it read is what it emitted */
          in += rt->source->records_out, out += rt->source->records_out,
              errors += rt->source->errors;
        else if (rt->sink)
          in += rt->sink->records_in, errors += rt->sink->errors;
      }
    }
    if (node->type == SL_NODE_SINK) /* a sink's records leave the pipeline */
      sl_log(SL_LOG_INFO, "pipeline", "sink '%s': %llu written, %llu errors",
             node->cfg.name, (unsigned long long)in,
             (unsigned long long)errors);
    else
      sl_log(SL_LOG_INFO, "pipeline", "%s '%s': %llu in, %llu out, %llu errors",
             node->type == SL_NODE_SOURCE ? "source" : "operator",
             node->cfg.name, (unsigned long long)in, (unsigned long long)out,
             (unsigned long long)errors);
  }
  sl_log(SL_LOG_INFO, "pipeline", "finished in %.0f ms", ms);
}

/* After the restore: the workers (each restores its key groups), sources,
 * sinks, timers, signals. 0 ok, -1 failed. */
static int start_rest(sl_core_t *c) {
  if (sl_watch_create(c) || build_workers(c))
    return -1;
  wire_wakes(c);
  if (sl_core_sinks_start(c) || sl_core_sources_create(c))
    return -1;
  sl_checkpoint_release_restore(c);
  if (sl_checkpoint_start(c))
    return -1;
  for (int t = 1; t <= c->plan->workers; t++)
    if (sl_worker_start(c->workers[t]))
      return -1;
  sl_watch_start(c);
  sl_confwatch_start(c);
  sl_progress_start(c);
  uv_signal_start(&c->sigint, on_signal, SIGINT);
  uv_signal_start(&c->sigterm, on_signal, SIGTERM);
  uv_timer_start(&c->flush_timer, on_flush, SL_FLUSH_MS, SL_FLUSH_MS);
  uv_idle_start(&c->idle, on_io_idle);
  c->started_ms = sl_now_ms();
  return 0;
}

/* A start that did not get to run: close what was opened, so that the
 * loop ends. nothing_to_run: a final checkpoint was restored (exit 0). */
static void abort_start(sl_core_t *c, int nothing_to_run) {
  c->shutting_down = 1;
  c->nothing_to_run = nothing_to_run;
  if (!nothing_to_run)
    sl_log(SL_LOG_ERROR, "pipeline", "could not start '%s'", c->plan->name);
  sl_checkpoint_stop(c);
  sl_admin_stop(c);
  sl_watch_stop(c);
  sl_confwatch_stop(c);
  stop_workers(c);
  sl_core_sources_close(c);
  sl_core_sinks_close(c);
  close_io(c);
  int zero = 0;
  if (!nothing_to_run)
    atomic_compare_exchange_strong(&c->exit_code, &zero, SL_EXIT_RUNTIME);
}

/* The restore runs on a libuv work thread, so that the admin API answers
 * (GET /health: 503 "restoring") while a store is read or waited for. */
static void restore_work(uv_work_t *w) {
  sl_core_t *c = w->data;
  c->restore_rc = sl_checkpoint_open(c, c->restore_arg);
  /* the sinks' own restore may wait for their store too (a Redis sink) */
  if (c->restore_rc == 0 && sl_core_sinks_create(c))
    c->restore_rc = -2;
}

static void restore_done(uv_work_t *w, int status) {
  sl_core_t *c = w->data;
  (void)status;
  c->restoring = 0;
  int rc = c->restore_rc; /* > 0 an exit code; -1 nothing to run; -2 a
                             sink could not be restored */
  if (rc > 0)
    atomic_store(&c->exit_code, rc);
  if (rc == -1)
    abort_start(c, 1);
  else if (rc != 0 || start_rest(c))
    abort_start(c, 0);
}

/* Opens the loop and the admin API, then restores in the background
 * (restore_done starts the rest). 0 under way; -1 failed at once. */
static int start(sl_core_t *c, const char *restore) {
  c->exact = c->plan->exactly_once;
  if (build_channels(c) || sl_align_init(c) || uv_loop_init(&c->loop))
    return -1;
  init_io(c);
  c->restoring = 1;
  if (sl_admin_start(c))
    return -1;
  c->restore_arg = restore;
  c->restore_req.data = c;
  if (uv_queue_work(&c->loop, &c->restore_req, restore_work, restore_done))
    return -1;
  return 0;
}

static void destroy(sl_core_t *c) {
  sl_checkpoint_close(c);
  sl_admin_close(c);
  sl_watch_close(c);
  sl_confwatch_close(c);
  sl_progress_close(c);
  sl_align_free(c);
  for (int t = 1; c->workers && t <= c->plan->workers; t++)
    sl_worker_destroy(c->workers[t]);
  free(c->workers);
  for (int i = 0; c->chans && i < c->plan->n_chans; i++)
    sl_channel_close(&c->chans[i]);
  free(c->chans);
  free(c->insts);
  sl_core_sources_free(c);
  sl_core_sinks_free(c);
}

/* Runs one plan; *next gets the plan of a valid changed conf to run next
 * (from the savepoint this run took), or NULL. */
static int run_plan(sl_plan_t *plan, const char *restore, int workers,
                    sl_conf_reloads_t *reloads, sl_plan_t **next) {
  sl_core_t c;
  memset(&c, 0, sizeof c);
  c.plan = plan;
  c.conf_reloads = reloads;
  c.workers_override = workers;
  atomic_init(&c.savepoint, 0);
  atomic_init(&c.live, 0);
  atomic_init(&c.exit_code, 0);
  double t0 = sl_now_ms();
  if (start(&c, restore)) {
    c.restoring = 0;
    abort_start(&c, 0);
  }
  uv_run(&c.loop, UV_RUN_DEFAULT);
  uv_loop_close(&c.loop);
  int code = atomic_load(&c.exit_code);
  if (!code && !c.nothing_to_run)
    log_summary(&c, sl_now_ms() - t0);
  *next = code ? NULL : c.next_plan;
  if (code)
    sl_plan_destroy(c.next_plan);
  destroy(&c);
  return code;
}

static int load(const sl_options_t *o, sl_plan_t **plan) {
  char *errors = NULL;
  int rc = sl_plan_load(o->conf_path, o->workers, plan, &errors);
  if (rc > 0)
    fprintf(stderr, "%s\n", errors);
  else if (rc < 0)
    sl_log(SL_LOG_ERROR, "conf", "%s", errors ? errors : "failed");
  free(errors);
  return rc == 0 ? 0 : rc > 0 ? SL_EXIT_CONF : SL_EXIT_RUNTIME;
}

int sl_check(const sl_options_t *o) {
  sl_plan_t *plan = NULL;
  int code = load(o, &plan);
  if (!code)
    printf("%s: ok\n", o->conf_path);
  sl_plan_destroy(plan);
  return code;
}

/* Logs a multi-line text one line at a time. */
static void log_lines(const char *text) {
  while (text && *text) {
    const char *nl = strchr(text, '\n');
    int n = nl ? (int)(nl - text) : (int)strlen(text);
    if (n > 0)
      sl_log(SL_LOG_INFO, "pipeline", "%.*s", n, text);
    text += n + (nl ? 1 : 0);
  }
}

int sl_run(const sl_options_t *o) {
  sl_plan_t *plan = NULL;
  int code = load(o, &plan);
  if (code)
    return code;
  const char *restore = o->restore;
  sl_conf_reloads_t reloads = {0, 0};
  while (plan) {
    sl_plan_t *next = NULL;
    log_lines(plan->describe);
    code = run_plan(plan, restore, o->workers, &reloads, &next);
    sl_plan_destroy(plan);
    plan = next;
    restore = "latest"; /* a reloaded conf starts from the savepoint */
  }
  return code;
}
