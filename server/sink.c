/* sink.c - the core's side of sinks (I/O thread only).
 *
 * Pops batches from the channels into each sink while the sink is not busy
 * (a busy sink is back-pressure: its channels fill, and the instances that
 * feed them stop), counts END markers, and when every input has ended asks
 * the sink to finish; a finished sink counts as done for the pipeline.
 */
#include "checkpoint.h"
#include "core.h"
#include "kinds.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define SL_SINK_BATCHES_PER_TURN 16

typedef struct sl_sink_core_s {
  sl_core_t *c;
  int gid;
  int started, finishing;
  /* a precommit the sink put off (it returned 1): asked again every flush
   * tick; until then the barrier is held here (the inputs stay blocked) */
  int later;
  uint64_t later_id; /* the checkpoint id, or SL_CKPT_FINAL */
} sl_sink_core_t;

void sl_sink_ready(sl_sink_t *k) {
  sl_sink_core_t *kc = k->core;
  k->busy = 0;
  uv_async_send(&kc->c->wake);
}

void sl_sink_fail_code(sl_sink_t *k, int code, const char *why) {
  sl_sink_core_t *kc = k->core;
  k->errors++;
  sl_log(SL_LOG_ERROR, "sink", "'%s': %s", k->cfg->name, why);
  sl_core_fail(kc->c, code);
}

void sl_sink_fail(sl_sink_t *k, const char *why) {
  sl_sink_fail_code(k, 3, why);
}

static void finished(sl_sink_t *k) {
  sl_sink_core_t *kc = k->core;
  sl_core_done(kc->c);
}

/* Pre-commits for checkpoint id (SL_CKPT_FINAL at the end) and acks it.
 * 0 done (or nothing to do); 1 the sink put it off (kc->later); -1 failed
 * (the pipeline fails). */
static int precommit(sl_sink_t *k, uint64_t id) {
  sl_sink_core_t *kc = k->core;
  sl_core_t *c = kc->c;
  if (!c->coord || (id == SL_CKPT_FINAL && !sl_checkpoint_at_end(c)))
    return 0;
  sl_buf_t state;
  sl_buf_init(&state);
  int rc = k->vt->precommit ? k->vt->precommit(k, id, &state) : 0;
  if (rc == 1) {
    sl_buf_free(&state);
    kc->later = 1;
    kc->later_id = id;
    return 1;
  }
  if (rc) {
    sl_buf_free(&state);
    sl_core_fail(c, 3);
    return -1;
  }
  sl_ack_t *a = sl_ack_create(id, kc->gid, 1);
  if (!a) {
    sl_buf_free(&state);
    sl_core_fail(c, 3);
    return -1;
  }
  a->parts[0].kg = -1;
  a->parts[0].blob = sl_buf_take(&state, &a->parts[0].len);
  sl_checkpoint_ack(c, a);
  return 0;
}

static void barrier_complete(sl_sink_t *k, uint64_t id) {
  sl_sink_core_t *kc = k->core;
  if (precommit(k, id) != 1)
    sl_align_done(kc->c, kc->gid);
}

/* Every input ended: the final precommit, then finish. */
static void end_all(sl_sink_t *k) {
  sl_sink_core_t *kc = k->core;
  kc->finishing = 1;
  if (precommit(k, SL_CKPT_FINAL) != 1)
    k->vt->finish(k, finished);
}

/* Flush tick: ask a sink that put its precommit off again. */
static void retry_later(sl_sink_t *k) {
  sl_sink_core_t *kc = k->core;
  kc->later = 0;
  int rc = precommit(k, kc->later_id);
  if (rc == 1)
    return;
  if (kc->later_id == SL_CKPT_FINAL && kc->finishing) {
    k->vt->finish(k, finished);
    return;
  }
  sl_align_done(kc->c, kc->gid);
  if (kc->c->insts[kc->gid].open_inputs == 0 && !kc->finishing)
    end_all(k); /* the inputs ended while the barrier was held */
  else
    uv_async_send(&kc->c->wake); /* its inputs may be read again */
}

static void handle(sl_sink_t *k, int in_index, sl_batch_t *b) {
  sl_sink_core_t *kc = k->core;
  sl_inst_rt_t *rt = &kc->c->insts[kc->gid];
  if (b->kind == SL_BATCH_BARRIER) {
    if (sl_align_barrier(kc->c, kc->gid, in_index, b->id))
      barrier_complete(k, b->id);
  } else if (b->kind == SL_BATCH_DATA) {
    k->records_in += b->nrec;
    uint64_t t0 = uv_hrtime();
    if (k->vt->write(k, b->data, b->len)) {
      k->errors++;
      sl_log(SL_LOG_ERROR, "sink", "'%s': malformed batch dropped",
             k->cfg->name);
    }
    uint64_t t1 = uv_hrtime();
    sl_histo_observe(&rt->latency, t1 - b->t_ns, b->nrec);
    sl_counter_add(&rt->busy_ns, t1 - t0);
  } else {
    if (sl_align_end(kc->c, kc->gid, in_index))
      barrier_complete(k, rt->align.id);
    if (--rt->open_inputs == 0 && !kc->finishing && !kc->later)
      end_all(k);
  }
  sl_batch_destroy(b);
}

/* Feeds one sink; 1 if it took anything. */
static int feed(sl_core_t *c, sl_sink_t *k) {
  sl_sink_core_t *kc = k->core;
  const sl_plan_inst_t *pi = &c->plan->insts[kc->gid];
  int work = 0;
  if (kc->later)
    return 0; /* a barrier is held here until its precommit is done */
  for (int i = 0; i < pi->n_in_ch; i++) {
    sl_channel_t *ch = &c->chans[pi->in_ch[i]];
    for (int n = 0; n < SL_SINK_BATCHES_PER_TURN && !k->busy; n++) {
      if (!sl_align_may_read(c, kc->gid, i))
        break;
      sl_batch_t *b = sl_channel_pop(ch);
      if (!b)
        break;
      work = 1;
      handle(k, i, b);
    }
  }
  return work;
}

/* A committing sink is brought back to the restored checkpoint (or, with
 * none, to empty) before it starts. */
static int restore(sl_core_t *c, sl_sink_t *k, int gid) {
  const sl_ckpt_entry_t *e = sl_checkpoint_sink_state(c, gid);
  if (!k->cfg->exactly_once || !k->vt->restore) {
    /* at-least-once: after a restore, keep what was written and append */
    k->resumed = e != NULL;
    return 0;
  }
  if (e && e->len == 0) {
    sl_log(SL_LOG_ERROR, "sink",
           "'%s': the checkpoint was taken without exactly_once, so it does "
           "not say what this sink committed; restore it with the guarantee "
           "it was taken with, or start over with --restore none",
           k->cfg->name);
    return -1;
  }
  return k->vt->restore(k, e ? e->blob : NULL, e ? e->len : 0);
}

int sl_core_sinks_create(sl_core_t *c) {
  const sl_plan_t *p = c->plan;
  int n = 0;
  for (int i = 0; i < p->n_nodes; i++)
    n += p->nodes[i].type == SL_NODE_SINK;
  c->sinks = calloc((size_t)n + 1, sizeof *c->sinks);
  sl_sink_core_t *cores = calloc((size_t)n + 1, sizeof *cores);
  if (!c->sinks || !cores) {
    free(cores);
    return -1;
  }
  c->sink_cores = cores;
  for (int i = 0; i < p->n_nodes; i++) {
    const sl_plan_node_t *node = &p->nodes[i];
    if (node->type != SL_NODE_SINK)
      continue;
    sl_sink_t *k = &c->sinks[c->n_sinks];
    sl_sink_core_t *kc = &cores[c->n_sinks++];
    kc->c = c;
    kc->gid = node->first_gid;
    k->vt = sl_kinds_sink(node->cfg.kind);
    k->cfg = &node->cfg;
    k->loop = &c->loop;
    k->core = kc;
    c->insts[kc->gid].sink = k;
    if (!k->vt || restore(c, k, kc->gid))
      return -1;
  }
  return 0;
}

int sl_core_sinks_start(sl_core_t *c) {
  for (int i = 0; i < c->n_sinks; i++) {
    sl_sink_t *k = &c->sinks[i];
    if (k->vt->start(k))
      return -1;
    ((sl_sink_core_t *)k->core)->started = 1;
  }
  return 0;
}

int sl_core_sinks_pump(sl_core_t *c) {
  int work = 0;
  for (int i = 0; i < c->n_sinks; i++)
    if (!c->sinks[i].busy)
      work |= feed(c, &c->sinks[i]);
  return work;
}

void sl_core_sinks_flush(sl_core_t *c) {
  for (int i = 0; i < c->n_sinks; i++) {
    sl_sink_core_t *kc = c->sinks[i].core;
    if (!kc->started)
      continue;
    c->sinks[i].vt->flush(&c->sinks[i]);
    if (kc->later && !atomic_load(&c->exit_code))
      retry_later(&c->sinks[i]);
  }
}

static void closed(sl_sink_t *k) {
  (void)k;
}

void sl_core_sinks_close(sl_core_t *c) {
  for (int i = 0; i < c->n_sinks; i++) {
    sl_sink_core_t *kc = c->sinks[i].core;
    if (kc->started)
      c->sinks[i].vt->close(&c->sinks[i], closed);
    kc->started = 0;
  }
}

void sl_core_sinks_free(sl_core_t *c) {
  free(c->sink_cores);
  c->sink_cores = NULL;
  free(c->sinks);
  c->sinks = NULL;
  c->n_sinks = 0;
}
