/* sink_redis_impl.h - private to the redis sink (sink_redis.c,
 * sink_redis_cmd.c, sink_redis_eo.c): the sink's state and the calls its
 * files make into each other. Not for the rest of the core: the sink is
 * sl_sink_redis_vt (endpoint.h).
 *
 * sink_redis.c owns the sink's life (start, write, flush, finish, close),
 * failing and reconnecting with back-off, and the at_least_once pipeline on
 * the async connection. sink_redis_cmd.c turns records into Redis commands.
 * sink_redis_eo.c is exactly_once: staging in Redis lists on a blocking
 * connection, the commit script with its marker, and the checkpoint state.
 * Everything runs on the I/O thread.
 */
#ifndef SL_SINK_REDIS_IMPL_H
#define SL_SINK_REDIS_IMPL_H

#include "codec.h"
#include "endpoint.h"
#include "redis_url.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define RS_MAX_CMDS 10000
#define RS_MAX_BYTES (8u << 20)
#define RS_BACKOFF_MIN 100
#define RS_BACKOFF_MAX 2000
#define RS_GIVE_UP_MS 30000 /* default of the conf's connect_timeout */

enum { RS_XADD, RS_HSET, RS_SET, RS_PUBLISH };

/* A closed (precommitted) epoch not yet committed. */
typedef struct sl_rsink_epoch_s {
  uint64_t epoch, run, id, count;
} sl_rsink_epoch_t;

/* One redis sink: its k->impl. */
typedef struct sl_rsink_s {
  sl_sink_t *k;
  sl_redis_url_t url;
  int cmd;
  const char *key_tpl;   /* settings: the key template ("{key}") */
  const char *field_tpl; /* hset: the field template, or NULL: the key */
  int eo;
  sl_buf_t tmp_v, tmp_k, tmp_key, tmp_field; /* scratch for one record */
  uv_timer_t timer;                          /* reconnects */
  uv_timer_t probe;                          /* at_least_once: socket errors */
  int timers_open;
  uint64_t backoff;
  double down_since; /* ms; 0 = up (or never tried) */
  int failed, finishing, closing;
  sl_sink_cb finish_done, close_done;
  uint64_t err_count;   /* error replies since the last log line */
  double err_logged_ms; /* when the last one was logged */
  /* at_least_once: the async connection and the unanswered commands */
  redisAsyncContext *ac;
  int ready;         /* connected and PING answered: q may be sent */
  sl_buf_t q;        /* RESP commands, each after its u32 length */
  size_t q_head;     /* offset of the oldest unanswered one */
  size_t q_n;        /* commands in q from q_head */
  size_t q_sent;     /* of which sent on the current connection */
  int setup_left;    /* setup replies (AUTH, SELECT, PING) still to come */
  int dropping;      /* rs_a_drop is freeing the context */
  double connect_at; /* when the current connect began (ms) */
  /* exactly_once: the blocking connection and the staging */
  redisContext *sc;
  char *k_marker, *k_runs, *k_lists, *k_staged; /* k_staged: "...:staged:R:" */
  uint64_t run, epoch, epoch_count; /* entries of this epoch acknowledged */
  sl_buf_t pend;                    /* entries not pushed, u32 length each */
  size_t pend_n;
  sl_rsink_epoch_t *eps;
  size_t n_eps, cap_eps;
  uint64_t commit_want; /* a commit to retry on reconnect; 0 = none */
  int has_commit_want;
  /* The markers must grow across runs, so the checkpoint taken at END
   * (SL_CKPT_FINAL to the core) is staged under the id after the last one
   * this sink saw (which is below the id the coordinator gives that image,
   * and so below every id of the next run). */
  uint64_t last_id, final_id;
} sl_rsink_t;

static inline double sl_rsink_now(void) {
  return (double)uv_hrtime() / 1e6;
}

/* ---- sink_redis.c: failing and reconnecting ---- */

/* Fails the sink (once): the pipeline ends with code 5 when why starts
 * with "redis at " (Redis unreachable or refusing us), else 3. */
void sl_rsink_fail(sl_rsink_t *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Cannot reach Redis (why): WARN and arm the retry timer with cb, or after
 * the connect timeout (30 s by default) fail. */
void sl_rsink_retry_later(sl_rsink_t *l, const char *why, uv_timer_cb cb);
/* Connected: resets the back-off (an INFO line if it had been down). */
void sl_rsink_up(sl_rsink_t *l);
/* An error reply worth retrying (LOADING, BUSY, TRYAGAIN, MASTERDOWN). */
int sl_rsink_is_transient(const char *msg);

/* ---- sink_redis_cmd.c: records as commands ---- */

/* The RS_* command named s ("xadd", "hset", "set", "publish"), or -1. */
int sl_rsink_command(const char *s);
/* "PREFIX:PIPELINE:SINK:suffix" (malloc'd) or NULL. */
char *sl_rsink_key(const sl_rsink_t *l, const char *suffix);

/* An encoding of one command of argc arguments: 0 ok, -1 OOM. */
typedef int (*sl_rsink_enc_fn)(sl_buf_t *b, int argc, const char **argv,
                               const size_t *lens);
/* RESP, what the async connection sends. */
int sl_rsink_resp(sl_buf_t *b, int argc, const char **argv, const size_t *lens);
/* A msgpack array of strings, what the commit script unpacks (argc <= 7). */
int sl_rsink_msgpack(sl_buf_t *b, int argc, const char **argv,
                     const size_t *lens);
/* Renders every record of r as one command, encoded by enc behind a u32
 * length, appended to q (counted in *count). 0 ok; -1 malformed batch; -2
 * out of memory (the sink has failed). */
int sl_rsink_queue(sl_rsink_t *l, sl_codec_reader_t *r, sl_buf_t *q,
                   size_t *count, sl_rsink_enc_fn enc);

/* ---- sink_redis_eo.c: exactly_once ---- */

/* Key names, the connection (blocking), this run's number. 0 ok; -1
 * logged. */
int sl_rsink_eo_start(sl_rsink_t *l);
/* Stages a batch's records (pushed past 1 MiB). As the vtable's write. */
int sl_rsink_eo_write(sl_rsink_t *l, sl_codec_reader_t *r);
/* Pushes what waits (one attempt) and wakes a busy sink. */
void sl_rsink_eo_flush(sl_rsink_t *l);
/* Pushes everything pending, reconnecting (blocking) as needed, for up to
 * 60 s. 0 ok, -1 failed (the sink has failed). */
int sl_rsink_eo_push_all(sl_rsink_t *l);
/* The vtable's precommit, commit and restore (no-ops under at_least_once). */
int sl_rsink_eo_precommit(sl_sink_t *k, uint64_t id, sl_buf_t *state);
int sl_rsink_eo_commit(sl_sink_t *k, uint64_t id);
int sl_rsink_eo_restore(sl_sink_t *k, const uint8_t *state, size_t len);

#endif
