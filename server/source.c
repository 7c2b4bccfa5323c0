/* source.c - the core's side of sources (I/O thread only).
 *
 * A source kind (source_file.c, ...) calls sl_source_emit (a line) or
 * sl_source_emit_fields (a table of string fields) per record; this
 * file packs the records into batches with the C codec, routes each batch to
 * the channels of the source's downstream edges by their grouping, and turns
 * a full channel into back-pressure: the source is paused until every one of
 * its channels has drained its overflow, then resumed.
 */
#include "checkpoint.h"
#include "codec.h"
#include "core.h"
#include "kinds.h"
#include "log.h"
#include "luaapi.h"
#include "sluice.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SL_SOURCE_BATCH_RECORDS 1024
#define SL_SOURCE_BATCH_BYTES (256 * 1024)

typedef struct sl_source_core_s {
  sl_core_t *c;
  int gid;
  int started, began;
  sl_codec_writer_t w;
} sl_source_core_t;

/* Shuffle: the channel of edge e that has been sent the fewest records, so
 * that batches of uneven size (a read chunk's tail) still balance. */
static int least_loaded(sl_source_core_t *sc, int e, int n_ch) {
  const sl_plan_inst_t *pi = &sc->c->plan->insts[sc->gid];
  int best = 0;
  for (int i = 1; i < n_ch; i++)
    if (sc->c->chans[pi->outs[e].ch[i]].records <
        sc->c->chans[pi->outs[e].ch[best]].records)
      best = i;
  return best;
}

/* Sends the finished batch to the channels chosen by each edge. */
static void route(sl_source_core_t *sc, const uint8_t *data, size_t len,
                  uint32_t nrec) {
  sl_core_t *c = sc->c;
  const sl_plan_inst_t *pi = &c->plan->insts[sc->gid];
  int fail = 0;
  for (int e = 0; e < pi->n_outs; e++) {
    const sl_plan_out_t *o = &pi->outs[e];
    if (o->n_ch == 0)
      continue;
    if (o->grouping == SL_GROUP_BROADCAST) {
      for (int i = 0; i < o->n_ch; i++)
        fail |= sl_core_send(c, o->ch[i], SL_BATCH_DATA, data, len, nrec, 0);
      continue;
    }
    int i = 0;
    if (o->grouping == SL_GROUP_SHUFFLE)
      i = least_loaded(sc, e, o->n_ch);
    else if (o->grouping == SL_GROUP_KEY) /* source records have no key */
      i = (int)((uint64_t)(sl_hash_bytes("", 0) %
                           (uint32_t)c->plan->max_parallelism) *
                (uint64_t)o->n_ch / (uint64_t)c->plan->max_parallelism);
    fail |= sl_core_send(c, o->ch[i], SL_BATCH_DATA, data, len, nrec, 0);
  }
  if (fail) {
    sl_log(SL_LOG_ERROR, "source", "out of memory sending a batch");
    sl_core_fail(c, 3);
  }
}

/* Opens a batch if none is open. 0 ok, -1 OOM. */
static int batch_open(sl_source_core_t *sc) {
  if (!sc->began) {
    if (sl_codec_writer_begin(&sc->w))
      return -1;
    sc->began = 1;
  }
  return 0;
}

/* A record was added (rc 0) or not (-1: OOM, the pipeline fails). */
static int batch_added(sl_source_t *s, int rc) {
  sl_source_core_t *sc = s->core;
  if (rc) {
    sl_log(SL_LOG_ERROR, "source", "%s: out of memory", s->cfg->name);
    sl_core_fail(sc->c, 3);
    return -1;
  }
  s->records_out++;
  if (sc->w.nrec >= SL_SOURCE_BATCH_RECORDS ||
      sc->w.buf.len >= SL_SOURCE_BATCH_BYTES)
    sl_source_flush(s);
  return 0;
}

int sl_source_emit(sl_source_t *s, const char *line, size_t n, double time_ms) {
  sl_source_core_t *sc = s->core;
  if (s->ended)
    return 0;
  /* event times are whole milliseconds (ctx.time) */
  return batch_added(s, batch_open(sc) ? -1
                                       : sl_codec_writer_add_string(
                                             &sc->w, line, n, floor(time_ms)));
}

/* One record whose value is a table of string fields: kv[2i] -> kv[2i+1]
 * (lens[] their lengths), npairs pairs; batched like sl_source_emit. */
int sl_source_emit_fields(sl_source_t *s, const char *const *kv,
                          const size_t *lens, size_t npairs, double time_ms) {
  sl_source_core_t *sc = s->core;
  if (s->ended)
    return 0;
  return batch_added(s, batch_open(sc)
                            ? -1
                            : sl_codec_writer_add_fields(
                                  &sc->w, kv, lens, npairs, floor(time_ms)));
}

void sl_source_flush(sl_source_t *s) {
  sl_source_core_t *sc = s->core;
  if (sc->began && sc->w.nrec > 0) {
    if (sl_codec_writer_finish(&sc->w) == 0)
      route(sc, sc->w.buf.data, sc->w.buf.len, sc->w.nrec);
    sc->began = 0;
  }
  if (!s->paused && sl_core_blocked(sc->c, sc->gid)) {
    s->paused = 1;
    s->vt->pause(s);
  }
}

void sl_source_end(sl_source_t *s, int closing) {
  sl_source_core_t *sc = s->core;
  if (s->ended)
    return;
  sl_source_flush(s);
  sl_checkpoint_source_ended(sc->c, sc->gid,
                             s->vt->offset ? s->vt->offset(s) : -1, closing);
  s->ended = 1;
  sl_core_mark(sc->c, sc->gid, SL_BATCH_END, 0, (uint32_t)closing);
  sl_log(SL_LOG_INFO, "source", "'%s' %s after %llu records", s->cfg->name,
         closing ? "ended" : "stopped", (unsigned long long)s->records_out);
}

void sl_source_reject(sl_source_t *s, const char *why) {
  s->errors++;
  sl_log(SL_LOG_WARN, "source", "'%s': rejected: %s", s->cfg->name, why);
}

void sl_source_fail(sl_source_t *s, const char *why) {
  sl_source_core_t *sc = s->core;
  s->errors++;
  sl_log(SL_LOG_ERROR, "source", "'%s': %s", s->cfg->name, why);
  sl_core_fail(sc->c, SL_EXIT_REDIS);
}

/* ---- the pipeline's view ---- */

/* Resumes from a restored checkpoint's offset, if there is one. */
static int seek(sl_core_t *c, sl_source_t *s, int gid) {
  const sl_ckpt_entry_t *e = sl_checkpoint_source_entry(c, gid);
  if (e && e->len && s->vt->seek_position) {
    sl_log(SL_LOG_INFO, "source", "'%s' resumes after position %.*s",
           s->cfg->name, (int)e->len, (const char *)e->blob);
    return s->vt->seek_position(s, e->blob, e->len);
  }
  int64_t off = sl_checkpoint_source_offset(c, gid);
  if (off < 0)
    return 0;
  if (!s->vt->seek) {
    sl_log(SL_LOG_WARN, "source", "'%s' cannot replay: starting fresh",
           s->cfg->name);
    return 0;
  }
  sl_log(SL_LOG_INFO, "source", "'%s' resumes at offset %lld", s->cfg->name,
         (long long)off);
  return s->vt->seek(s, off);
}

int sl_core_sources_create(sl_core_t *c) {
  const sl_plan_t *p = c->plan;
  int n = 0;
  for (int i = 0; i < p->n_nodes; i++)
    n += p->nodes[i].type == SL_NODE_SOURCE;
  c->sources = calloc((size_t)n + 1, sizeof *c->sources);
  sl_source_core_t *cores = calloc((size_t)n + 1, sizeof *cores);
  if (!c->sources || !cores) {
    free(cores);
    return -1;
  }
  c->source_cores = cores;
  for (int i = 0; i < p->n_nodes; i++) {
    const sl_plan_node_t *node = &p->nodes[i];
    if (node->type != SL_NODE_SOURCE)
      continue;
    sl_source_t *s = &c->sources[c->n_sources];
    sl_source_core_t *sc = &cores[c->n_sources++];
    sc->c = c;
    sc->gid = node->first_gid;
    sl_codec_writer_init(&sc->w);
    s->vt = sl_kinds_source(node->cfg.kind);
    s->cfg = &node->cfg;
    s->loop = &c->loop;
    s->core = sc;
    c->insts[sc->gid].source = s;
    if (!s->vt || seek(c, s, sc->gid) || s->vt->start(s))
      return -1;
    sc->started = 1;
  }
  return 0;
}

void sl_core_sources_pump(sl_core_t *c) {
  for (int i = 0; i < c->n_sources; i++) {
    sl_source_t *s = &c->sources[i];
    sl_source_core_t *sc = s->core;
    sl_core_drain(c, sc->gid);
    if (s->paused && !s->ended && !sl_core_blocked(c, sc->gid)) {
      s->paused = 0;
      s->vt->resume(s);
    }
  }
}

void sl_core_sources_stop(sl_core_t *c) {
  for (int i = 0; i < c->n_sources; i++)
    if (!c->sources[i].ended &&
        ((sl_source_core_t *)c->sources[i].core)->started)
      c->sources[i].vt->stop(&c->sources[i]);
}

static void closed(sl_source_t *s) {
  (void)s;
}

void sl_core_sources_close(sl_core_t *c) {
  for (int i = 0; i < c->n_sources; i++) {
    sl_source_t *s = &c->sources[i];
    sl_source_core_t *sc = s->core;
    s->ended = 1;
    if (sc->started)
      s->vt->close(s, closed);
    sc->started = 0;
  }
}

void sl_core_sources_free(sl_core_t *c) {
  for (int i = 0; i < c->n_sources; i++)
    sl_codec_writer_free(&((sl_source_core_t *)c->sources[i].core)->w);
  free(c->source_cores);
  c->source_cores = NULL;
  free(c->sources);
  c->sources = NULL;
  c->n_sources = 0;
}
