/* checkpoint.c - the checkpoint coordinator (see checkpoint.h).
 *
 * Runs on the I/O thread, except sl_checkpoint_ack (any thread: a mutex
 * guarded queue) and the store commit (a libuv work thread, which owns the
 * store while it runs). Bookkeeping per checkpoint: which instances and sinks
 * have acked it. An instance or sink that has already ended acks no more
 * barriers; its final snapshot (taken at END, after close) stands in for
 * it, which is consistent because everything it ever received came before
 * its inputs' END markers.
 */
#include "checkpoint.h"

#include "ckpt.h"
#include "log.h"
#include "luaapi.h"
#include "sluice.h"
#include "store.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct sl_coord_s {
  sl_core_t *c;
  sl_store_t *store;
  uv_timer_t timer;
  uv_mutex_t mu;
  sl_ack_t *queue; /* acks handed over by any thread (mu) */
  uint64_t last_id, pending;
  double started_ms, every_ms, timeout_ms, last_trigger_ms;
  sl_ack_t **acked;  /* [gid]: ack of `pending` */
  sl_ack_t **final;  /* [gid]: ack taken at END */
  uint8_t *commit;   /* [gid]: the sink pre-committed the image being stored */
  int64_t *src_end;  /* [gid]: end offset of an ended source; INT64_MIN */
  sl_buf_t *src_pos; /* [gid]: byte position (redis) at the last barrier */
  sl_buf_t *end_pos; /* [gid]: byte position at the source's end */
  int all_closing;   /* every source ended with its input (not a stop) */
  int final_done;    /* the final checkpoint is stored (or failed) */
  int storing;
  uv_work_t work;
  uint64_t work_id;
  int work_final, work_end, work_rc; /* end: the checkpoint taken at END */
  uint8_t *work_data;
  size_t work_len;
  char *work_err;
  double work_started;
  sl_ckpt_t img; /* the pending checkpoint's image, being assembled */
  sl_ckpt_t restored;
  int have_restored;
  const sl_ckpt_entry_t **rs;
  uint64_t completed, failed;
  uint64_t last_done_id, last_done_bytes; /* the last completed checkpoint */
  double last_done_ms, last_done_duration;
  sl_checkpoint_outcome_t outcomes[SL_CKPT_OUTCOMES]; /* the last decided */
  uint64_t n_outcomes;
} sl_coord_t;

/* Checkpoint id was decided: state 1 stored, -1 failed or abandoned. */
static void decided(sl_coord_t *k, uint64_t id, int state, uint64_t bytes,
                    const char *why) {
  sl_checkpoint_outcome_t *o = &k->outcomes[k->n_outcomes++ % SL_CKPT_OUTCOMES];
  memset(o, 0, sizeof *o);
  o->id = id;
  o->state = state;
  o->bytes = bytes;
  o->duration_ms = sl_now_ms() - k->started_ms;
  snprintf(o->why, sizeof o->why, "%s", why ? why : "");
  uv_async_send(&k->c->wake); /* the admin server may be waiting for it */
}

/* ---- acks ---- */

sl_ack_t *sl_ack_create(uint64_t id, int gid, int nparts) {
  sl_ack_t *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  a->parts = nparts ? calloc((size_t)nparts, sizeof *a->parts) : NULL;
  if (nparts && !a->parts) {
    free(a);
    return NULL;
  }
  a->id = id;
  a->gid = gid;
  a->n = nparts;
  return a;
}

void sl_ack_destroy(sl_ack_t *a) {
  if (!a)
    return;
  for (int i = 0; i < a->n; i++)
    free(a->parts[i].blob);
  free(a->parts);
  free(a);
}

void sl_checkpoint_ack(sl_core_t *c, sl_ack_t *a) {
  sl_coord_t *k = c->coord;
  if (!k) {
    sl_ack_destroy(a);
    return;
  }
  uv_mutex_lock(&k->mu);
  a->next = k->queue;
  k->queue = a;
  uv_mutex_unlock(&k->mu);
  uv_async_send(&c->wake);
}

/* ---- which instances take part ---- */

static int takes_part(const sl_core_t *c, int gid) {
  return c->plan->nodes[c->plan->insts[gid].node].type != SL_NODE_SOURCE;
}

static int is_source(const sl_core_t *c, int gid) {
  return !takes_part(c, gid);
}

static const char *name_of(const sl_core_t *c, int gid) {
  return c->plan->nodes[c->plan->insts[gid].node].cfg.name;
}

/* ---- assembling and storing an image ---- */

static int add_parts(sl_ckpt_t *img, const sl_core_t *c, const sl_ack_t *a) {
  const char *node = name_of(c, a->gid);
  for (int i = 0; i < a->n; i++) {
    const sl_ack_part_t *p = &a->parts[i];
    int rc = p->kg < 0 ? sl_ckpt_add_sink(img, node, p->blob, p->len)
                       : sl_ckpt_add_state(img, node, p->kg, p->blob, p->len);
    if (rc)
      return -1;
  }
  return 0;
}

static int add_sources(sl_ckpt_t *img, sl_coord_t *k) {
  const sl_core_t *c = k->c;
  for (int g = 0; g < c->plan->n_insts; g++) {
    if (!is_source(c, g))
      continue;
    int rc = k->end_pos[g].len
                 ? sl_ckpt_add_source_pos(img, name_of(c, g), -1,
                                          k->end_pos[g].data, k->end_pos[g].len)
                 : sl_ckpt_add_source(img, name_of(c, g), k->src_end[g]);
    if (rc)
      return -1;
  }
  return 0;
}

static void after_store(uv_work_t *w, int status);

static void do_store(uv_work_t *w) {
  sl_coord_t *k = w->data;
  k->work_rc = sl_store_commit(k->store, k->work_id, k->work_data, k->work_len,
                               &k->work_err);
}

/* Encodes and stores; `acks` per gid (NULL entries use the final ack). */
static void store_image(sl_coord_t *k, sl_ckpt_t *img, sl_ack_t **acks) {
  sl_core_t *c = k->c;
  int rc = 0;
  for (int g = 0; g < c->plan->n_insts && !rc; g++) {
    if (!takes_part(c, g))
      continue;
    /* a sink whose own ack is in the image commits it; one that ended
     * before the barrier commits at the final checkpoint */
    k->commit[g] = !acks || acks[g];
    rc = add_parts(img, c, acks && acks[g] ? acks[g] : k->final[g]);
  }
  if (!rc)
    rc = sl_ckpt_add_meta(img, "pipeline", 0, c->plan->name) ||
         sl_ckpt_add_meta(img, "max_parallelism", c->plan->max_parallelism,
                          NULL);
  if (!rc)
    rc = sl_ckpt_encode(img, &k->work_data, &k->work_len);
  if (rc) {
    sl_log(SL_LOG_ERROR, "checkpoint", "%" PRIu64 ": out of memory", img->id);
    k->failed++;
    decided(k, img->id, -1, 0, "out of memory");
    if (!acks)
      k->final_done = 1;
    return;
  }
  k->storing = 1;
  k->work_id = img->id;
  k->work_final = img->final;
  k->work_end = acks == NULL;
  k->work_started = sl_now_ms();
  k->work.data = k;
  uv_queue_work(&c->loop, &k->work, do_store, after_store);
}

static void commit_sinks(sl_coord_t *k, uint64_t id) {
  sl_core_t *c = k->c;
  for (int g = 0; g < c->plan->n_insts; g++) {
    sl_sink_t *s = c->insts[g].sink;
    if (s && k->commit[g] && s->vt->commit && s->cfg->exactly_once &&
        s->vt->commit(s, id))
      sl_core_fail(c, 3);
  }
}

/* Replayable sources with positions may now release what the stored
 * checkpoint covers (the positions recorded when it was taken). */
static void committed_sources(sl_coord_t *k, uint64_t id, int end) {
  sl_core_t *c = k->c;
  for (int g = 0; g < c->plan->n_insts; g++) {
    sl_source_t *s = c->insts[g].source;
    sl_buf_t *pos =
        end || k->src_end[g] != INT64_MIN ? &k->end_pos[g] : &k->src_pos[g];
    if (s && s->vt->committed && pos->len)
      s->vt->committed(s, id, pos->data, pos->len);
  }
}

static void after_store(uv_work_t *w, int status) {
  sl_coord_t *k = w->data;
  (void)status;
  k->storing = 0;
  if (k->work_rc == 0) {
    k->completed++;
    k->last_done_id = k->work_id;
    k->last_done_bytes = k->work_len;
    k->last_done_ms = sl_now_ms();
    k->last_done_duration = k->last_done_ms - k->started_ms;
    sl_log(SL_LOG_INFO, "checkpoint",
           "%" PRIu64 "%s completed: %zu bytes, %.0f ms (store %.0f ms)",
           k->work_id, k->work_final ? " (final)" : "", k->work_len,
           sl_now_ms() - k->started_ms, sl_now_ms() - k->work_started);
    commit_sinks(k, k->work_end ? SL_CKPT_FINAL : k->work_id);
    committed_sources(k, k->work_id, k->work_end);
    decided(k, k->work_id, 1, k->work_len, NULL);
  } else {
    k->failed++;
    decided(k, k->work_id, -1, 0, k->work_err ? k->work_err : "store error");
    sl_log(SL_LOG_ERROR, "checkpoint", "%" PRIu64 " failed: %s", k->work_id,
           k->work_err ? k->work_err : "store error");
  }
  free(k->work_err);
  k->work_err = NULL;
  free(k->work_data);
  k->work_data = NULL;
  if (k->work_end)
    k->final_done = 1;
  uv_async_send(&k->c->wake);
}

/* ---- periodic checkpoints ---- */

static void drop_pending(sl_coord_t *k) {
  for (int g = 0; g < k->c->plan->n_insts; g++) {
    sl_ack_destroy(k->acked[g]);
    k->acked[g] = NULL;
  }
  k->pending = 0;
}

static int sources_all_ended(const sl_coord_t *k) {
  for (int g = 0; g < k->c->plan->n_insts; g++)
    if (is_source(k->c, g) && k->src_end[g] == INT64_MIN)
      return 0;
  return 1;
}

/* Injects barrier id at one source (recording its offset first). */
static void inject(sl_coord_t *k, sl_ckpt_t *img, int gid, uint64_t id) {
  sl_core_t *c = k->c;
  sl_source_t *s = c->insts[gid].source;
  int64_t off = k->src_end[gid];
  if (s->vt->position) {
    if (off == INT64_MIN) {
      sl_source_flush(s);
      k->src_pos[gid].len = 0;
      if (s->vt->position(s, &k->src_pos[gid]))
        sl_core_fail(c, 3);
      sl_core_mark(c, gid, SL_BATCH_BARRIER, id, 0);
    }
    sl_buf_t *pos = off == INT64_MIN ? &k->src_pos[gid] : &k->end_pos[gid];
    if (sl_ckpt_add_source_pos(img, name_of(c, gid), -1, pos->data, pos->len))
      sl_core_fail(c, 3);
    return;
  }
  if (off == INT64_MIN) {
    sl_source_flush(s);
    off = s->vt->offset ? s->vt->offset(s) : -1;
    sl_core_mark(c, gid, SL_BATCH_BARRIER, id, 0);
  }
  if (sl_ckpt_add_source(img, name_of(c, gid), off))
    sl_core_fail(c, 3);
}

static void trigger(sl_coord_t *k) {
  sl_core_t *c = k->c;
  uint64_t id = ++k->last_id;
  sl_ckpt_free(&k->img);
  sl_ckpt_init(&k->img, id);
  k->pending = id;
  k->started_ms = sl_now_ms();
  for (int g = 0; g < c->plan->n_insts; g++)
    if (is_source(c, g))
      inject(k, &k->img, g, id);
}

/* Complete when every instance acked `pending` or has ended. */
static int pending_complete(const sl_coord_t *k) {
  for (int g = 0; g < k->c->plan->n_insts; g++)
    if (takes_part(k->c, g) && !k->acked[g] && !k->final[g])
      return 0;
  return 1;
}

static void on_tick(uv_timer_t *t) {
  sl_coord_t *k = t->data;
  sl_core_t *c = k->c;
  double now = sl_now_ms();
  if (k->pending && now - k->started_ms > k->timeout_ms) {
    sl_log(SL_LOG_WARN, "checkpoint", "%" PRIu64 " abandoned after %.0f ms",
           k->pending, now - k->started_ms);
    k->failed++;
    decided(k, k->pending, -1, 0,
            "abandoned: not complete within the checkpoint timeout");
    drop_pending(k);
  }
  if (!k->pending && !k->storing && !c->stopping && !sources_all_ended(k) &&
      !atomic_load(&c->exit_code) && now - k->last_trigger_ms >= k->every_ms) {
    k->last_trigger_ms = now;
    trigger(k);
  }
}

/* ---- taking in acks ---- */

static void take(sl_coord_t *k, sl_ack_t *a) {
  sl_core_t *c = k->c;
  if (a->gid < 0 || a->gid >= c->plan->n_insts) {
    sl_ack_destroy(a);
    return;
  }
  sl_ack_t **slot = a->id == SL_CKPT_FINAL ? &k->final[a->gid]
                    : a->id == k->pending  ? &k->acked[a->gid]
                                           : NULL;
  if (!slot) { /* a late ack of an abandoned checkpoint */
    sl_ack_destroy(a);
    return;
  }
  sl_ack_destroy(*slot);
  *slot = a;
}

static int final_complete(const sl_coord_t *k) {
  for (int g = 0; g < k->c->plan->n_insts; g++)
    if (takes_part(k->c, g) && !k->final[g])
      return 0;
  return sources_all_ended(k);
}

int sl_checkpoint_periodic(sl_core_t *c) {
  return c->coord && !c->plan->ckpt_implicit;
}

int sl_checkpoint_at_end(sl_core_t *c) {
  return c->coord &&
         (!c->plan->ckpt_implicit || atomic_load(&c->savepoint) != 0);
}

int sl_checkpoint_pump(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (!k)
    return 0;
  uv_mutex_lock(&k->mu);
  sl_ack_t *a = k->queue;
  k->queue = NULL;
  uv_mutex_unlock(&k->mu);
  while (a) {
    sl_ack_t *next = a->next;
    take(k, a);
    a = next;
  }
  if (atomic_load(&c->exit_code)) {
    /* A failed run (or on_error = "stop", which skipped records) must not
     * be checkpointed: a restart replays from the last good checkpoint. */
    if (k->pending) {
      decided(k, k->pending, -1, 0, "the pipeline failed");
      drop_pending(k);
    }
    k->final_done = 1;
    return k->storing;
  }
  if (k->pending && !k->storing && pending_complete(k)) {
    store_image(k, &k->img, k->acked);
    drop_pending(k);
  }
  if (!sl_checkpoint_at_end(c))
    return 0; /* no checkpoints and (so far) no savepoint asked for */
  if (!k->final_done && !k->pending && !k->storing && final_complete(k)) {
    sl_ckpt_t img;
    sl_ckpt_init(&img, ++k->last_id);
    img.final = k->all_closing;
    img.time_ms = sl_now_ms();
    k->started_ms = img.time_ms;
    if (add_sources(&img, k))
      sl_core_fail(c, 3);
    else
      store_image(k, &img, NULL);
    sl_ckpt_free(&img);
    if (!k->storing)
      k->final_done = 1;
  }
  return !k->final_done;
}

void sl_checkpoint_source_ended(sl_core_t *c, int gid, int64_t offset,
                                int closing) {
  sl_coord_t *k = c->coord;
  if (!k)
    return;
  k->src_end[gid] = offset;
  sl_source_t *s = c->insts[gid].source;
  if (s && s->vt->position) {
    k->end_pos[gid].len = 0;
    if (s->vt->position(s, &k->end_pos[gid]))
      sl_core_fail(c, 3);
  }
  if (!closing)
    k->all_closing = 0;
}

/* ---- restore (main thread, before anything runs) ---- */

/* Reads and verifies image id into k->restored. 0 ok. */
static int load_image(sl_coord_t *k, uint64_t id) {
  uint8_t *data = NULL;
  size_t len = 0;
  char *err = NULL;
  const char *why = NULL;
  if (sl_store_read(k->store, id, &data, &len, &err)) {
    sl_log(SL_LOG_WARN, "checkpoint", "%" PRIu64 " unreadable: %s", id,
           err ? err : "?");
    free(err);
    return -1;
  }
  int rc = sl_ckpt_decode(data, len, &k->restored, &why);
  free(data);
  if (rc) {
    sl_log(SL_LOG_WARN, "checkpoint", "%" PRIu64 " is torn or corrupt (%s)", id,
           why ? why : "?");
    return -1;
  }
  k->have_restored = 1;
  return 0;
}

/* The newest usable image, trying `latest` first, then older ones. */
static void load_latest(sl_coord_t *k, uint64_t latest, const uint64_t *ids,
                        size_t n) {
  if (latest && load_image(k, latest) == 0)
    return;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] == latest)
      continue;
    if (latest && ids[i] > latest)
      continue; /* never stored completely: latest did not move to it */
    sl_log(SL_LOG_INFO, "checkpoint", "falling back to checkpoint %" PRIu64,
           ids[i]);
    if (load_image(k, ids[i]) == 0)
      return;
  }
}

static int choose(sl_coord_t *k, const char *restore) {
  uint64_t latest = 0, *ids = NULL;
  size_t n = 0;
  char *err = NULL;
  if (sl_store_latest(k->store, &latest, &err)) {
    sl_log(SL_LOG_ERROR, "checkpoint", "%s", err ? err : "store error");
    free(err);
    return SL_EXIT_RUNTIME;
  }
  if (err) { /* latest is unreadable: fall back to the list */
    sl_log(SL_LOG_WARN, "checkpoint", "%s", err);
    free(err);
    err = NULL;
  }
  if (sl_store_list(k->store, &ids, &n, &err)) {
    sl_log(SL_LOG_ERROR, "checkpoint", "%s", err ? err : "store error");
    free(err);
    return SL_EXIT_RUNTIME;
  }
  for (size_t i = 0; i < n; i++)
    if (ids[i] > k->last_id)
      k->last_id = ids[i];
  int code = 0;
  if (!restore || !strcmp(restore, "latest")) {
    load_latest(k, latest, ids, n);
  } else if (strcmp(restore, "none")) {
    char *end;
    unsigned long long id = strtoull(restore, &end, 10);
    if (*end || !id) {
      sl_log(SL_LOG_ERROR, "checkpoint",
             "--restore wants latest, none or a checkpoint id (got '%s')",
             restore);
      code = 1;
    } else if (load_image(k, id)) {
      code = SL_EXIT_RUNTIME;
    }
  }
  free(ids);
  return code;
}

/* Opens the store; a Redis that cannot be reached is retried with
 * back-off until checkpoint.connect_timeout, then the run fails with the
 * exit code of an unreachable Redis. */
static int open_store(sl_coord_t *k, const sl_plan_t *p) {
  int redis = !strncmp(p->ckpt_store, "redis://", 8);
  double deadline = sl_now_ms() + p->ckpt_connect_ms;
  uint64_t delay = 100;
  for (;;) {
    char *err = NULL;
    if (sl_store_open(p->ckpt_store, p->ckpt_keep, &k->store, &err) == 0)
      return 0;
    if (!redis || sl_now_ms() + (double)delay > deadline) {
      sl_log(SL_LOG_ERROR, "checkpoint", "%s%s",
             err ? err : "cannot open store",
             redis ? " (gave up: checkpoint.connect_timeout)" : "");
      free(err);
      return redis ? SL_EXIT_REDIS : SL_EXIT_RUNTIME;
    }
    sl_log(SL_LOG_WARN, "checkpoint", "%s; retrying in %llu ms",
           err ? err : "store unreachable", (unsigned long long)delay);
    free(err);
    uv_sleep((unsigned)delay);
    delay = delay * 2 > 2000 ? 2000 : delay * 2;
  }
}

/* A checkpoint of another pipeline, or taken with another number of key
 * groups, cannot be restored: its keys would land in the wrong places. */
static int check_meta(sl_coord_t *k) {
  const sl_plan_t *p = k->c->plan;
  const sl_ckpt_entry_t *name =
      sl_ckpt_find(&k->restored, SL_CKPT_META, "pipeline", -1);
  const sl_ckpt_entry_t *maxp =
      sl_ckpt_find(&k->restored, SL_CKPT_META, "max_parallelism", -1);
  if (name && (name->len != strlen(p->name) ||
               memcmp(name->blob, p->name, name->len))) {
    sl_log(SL_LOG_ERROR, "checkpoint",
           "checkpoint %" PRIu64 " in %s belongs to pipeline '%.*s', not "
           "'%s': give this pipeline its own store (or --restore none)",
           k->restored.id, p->ckpt_store, (int)name->len,
           (const char *)name->blob, p->name);
    return SL_EXIT_CONF;
  }
  if (maxp && maxp->offset != p->max_parallelism) {
    sl_log(SL_LOG_ERROR, "checkpoint",
           "checkpoint %" PRIu64 " was taken with max_parallelism %lld; this "
           "conf says %d: key groups cannot be remapped (keep %lld, or "
           "--restore none)",
           k->restored.id, (long long)maxp->offset, p->max_parallelism,
           (long long)maxp->offset);
    return SL_EXIT_CONF;
  }
  return 0;
}

int sl_checkpoint_open(sl_core_t *c, const char *restore) {
  const sl_plan_t *p = c->plan;
  if (!p->ckpt_store)
    return 0;
  sl_coord_t *k = calloc(1, sizeof *k);
  if (!k)
    return SL_EXIT_RUNTIME;
  c->coord = k;
  k->c = c;
  k->every_ms = p->ckpt_every_ms;
  k->timeout_ms = p->ckpt_timeout_ms;
  k->all_closing = 1;
  uv_mutex_init(&k->mu);
  sl_ckpt_init(&k->img, 0);
  sl_ckpt_init(&k->restored, 0);
  k->acked = calloc((size_t)p->n_insts + 1, sizeof *k->acked);
  k->final = calloc((size_t)p->n_insts + 1, sizeof *k->final);
  k->src_end = calloc((size_t)p->n_insts + 1, sizeof *k->src_end);
  k->rs = calloc((size_t)p->max_parallelism + 1, sizeof *k->rs);
  k->commit = calloc((size_t)p->n_insts + 1, 1);
  k->src_pos = calloc((size_t)p->n_insts + 1, sizeof *k->src_pos);
  k->end_pos = calloc((size_t)p->n_insts + 1, sizeof *k->end_pos);
  if (!k->acked || !k->final || !k->src_end || !k->rs || !k->commit ||
      !k->src_pos || !k->end_pos)
    return SL_EXIT_RUNTIME;
  for (int g = 0; g < p->n_insts; g++)
    k->src_end[g] = INT64_MIN;
  int code = open_store(k, p);
  if (code)
    return code;
  code = choose(k, restore);
  if (code)
    return code;
  if (!k->have_restored) {
    sl_log(p->ckpt_implicit ? SL_LOG_DEBUG : SL_LOG_INFO, "checkpoint",
           "starting empty (store %s)", p->ckpt_store);
    return 0;
  }
  code = check_meta(k);
  if (code)
    return code;
  sl_log(SL_LOG_INFO, "checkpoint",
         "restoring checkpoint %" PRIu64 " (%d entries)", k->restored.id,
         k->restored.n);
  if (k->restored.final) {
    sl_log(SL_LOG_INFO, "checkpoint",
           "checkpoint %" PRIu64 " was taken at the end of the input: "
           "nothing left to run (--restore none runs it again)",
           k->restored.id);
    return -1;
  }
  return 0;
}

const sl_ckpt_entry_t *sl_checkpoint_source_entry(sl_core_t *c, int gid) {
  sl_coord_t *k = c->coord;
  if (!k || !k->have_restored)
    return NULL;
  return sl_ckpt_find(&k->restored, SL_CKPT_SOURCE, name_of(c, gid), -1);
}

int64_t sl_checkpoint_source_offset(sl_core_t *c, int gid) {
  sl_coord_t *k = c->coord;
  if (!k || !k->have_restored)
    return -1;
  const sl_ckpt_entry_t *e =
      sl_ckpt_find(&k->restored, SL_CKPT_SOURCE, name_of(c, gid), -1);
  return e ? e->offset : -1;
}

const sl_ckpt_entry_t *sl_checkpoint_sink_state(sl_core_t *c, int gid) {
  sl_coord_t *k = c->coord;
  if (!k || !k->have_restored)
    return NULL;
  return sl_ckpt_find(&k->restored, SL_CKPT_SINK, name_of(c, gid), -1);
}

int sl_checkpoint_restore_state(sl_core_t *c, const char *name, int index,
                                int parallelism, const sl_ckpt_entry_t ***out,
                                int *n) {
  sl_coord_t *k = c->coord;
  *out = NULL;
  *n = 0;
  if (!k || !k->have_restored)
    return 0;
  int maxp = c->plan->max_parallelism;
  for (int kg = 0; kg < maxp; kg++) {
    if ((int)((int64_t)kg * parallelism / maxp) != index)
      continue;
    const sl_ckpt_entry_t *e =
        sl_ckpt_find(&k->restored, SL_CKPT_STATE, name, kg);
    if (e)
      k->rs[(*n)++] = e;
  }
  *out = k->rs;
  return 0;
}

void sl_checkpoint_release_restore(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (k) {
    sl_ckpt_free(&k->restored);
    k->have_restored = 0;
  }
}

/* ---- life cycle ---- */

int sl_checkpoint_start(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (!k)
    return 0;
  uv_timer_init(&c->loop, &k->timer);
  k->timer.data = k;
  k->last_trigger_ms = sl_now_ms();
  uint64_t tick = k->every_ms < 100 ? (uint64_t)k->every_ms : 100;
  uv_timer_start(&k->timer, on_tick, tick ? tick : 1, tick ? tick : 1);
  return 0;
}

void sl_checkpoint_request(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (k)
    k->last_trigger_ms = 0;
}

uint64_t sl_checkpoint_trigger(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (!sl_checkpoint_periodic(c) || c->stopping || c->shutting_down ||
      atomic_load(&c->exit_code) || sources_all_ended(k))
    return 0;
  if (k->pending)
    return k->pending;
  if (k->storing) { /* the next tick after the store starts it */
    k->last_trigger_ms = 0;
    return k->last_id + 1;
  }
  k->last_trigger_ms = sl_now_ms();
  trigger(k);
  return k->pending;
}

void sl_checkpoint_stats(sl_core_t *c, sl_checkpoint_stats_t *out) {
  sl_coord_t *k = c->coord;
  memset(out, 0, sizeof *out);
  if (!k)
    return;
  out->completed = k->completed;
  out->failed = k->failed;
  out->last_id = k->last_done_id;
  out->last_time_ms = k->last_done_ms;
  out->last_duration_ms = k->last_done_duration;
  out->last_bytes = k->last_done_bytes;
  out->pending = k->pending;
}

int sl_checkpoint_outcome(sl_core_t *c, uint64_t id,
                          sl_checkpoint_outcome_t *out) {
  sl_coord_t *k = c->coord;
  if (!k)
    return -1;
  uint64_t n =
      k->n_outcomes < SL_CKPT_OUTCOMES ? k->n_outcomes : SL_CKPT_OUTCOMES;
  for (uint64_t i = 0; i < n; i++) {
    const sl_checkpoint_outcome_t *o =
        &k->outcomes[(k->n_outcomes - 1 - i) % SL_CKPT_OUTCOMES];
    if (o->id == id) {
      *out = *o;
      return o->state;
    }
  }
  memset(out, 0, sizeof *out);
  out->id = id;
  out->state = -1;
  if (id <= k->last_id && id != k->pending && !(k->storing && id == k->work_id))
    snprintf(out->why, sizeof out->why, "no record of it (too old)");
  else if (k->final_done)
    snprintf(out->why, sizeof out->why, "the pipeline stopped before it");
  else
    out->state = 0;
  return out->state;
}

void sl_checkpoint_stop(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (k && !uv_is_closing((uv_handle_t *)&k->timer) && k->timer.loop)
    uv_close((uv_handle_t *)&k->timer, NULL);
}

void sl_checkpoint_close(sl_core_t *c) {
  sl_coord_t *k = c->coord;
  if (!k)
    return;
  sl_ack_t *a = k->queue;
  while (a) {
    sl_ack_t *next = a->next;
    sl_ack_destroy(a);
    a = next;
  }
  for (int g = 0; k->acked && g < c->plan->n_insts; g++) {
    sl_ack_destroy(k->acked[g]);
    sl_ack_destroy(k->final[g]);
  }
  free(k->acked);
  free(k->final);
  free(k->src_end);
  free(k->rs);
  free(k->commit);
  for (int g = 0; k->src_pos && k->end_pos && g < c->plan->n_insts; g++) {
    sl_buf_free(&k->src_pos[g]);
    sl_buf_free(&k->end_pos[g]);
  }
  free(k->src_pos);
  free(k->end_pos);
  sl_ckpt_free(&k->img);
  sl_ckpt_free(&k->restored);
  if (k->store)
    sl_store_close(k->store);
  uv_mutex_destroy(&k->mu);
  free(k);
  c->coord = NULL;
}
