/* source_redis.c - the `redis` source: a Redis Stream read through a
 * consumer group.
 *
 * Runs on the I/O thread. Owns one hiredis async connection (attached to the
 * I/O loop with hiredis's libuv adapter) and one uv_timer_t that serves, by
 * state, as the reconnect back-off, the deadline of a connection attempt and
 * the watchdog of a read in flight. Every entry read becomes one record: its
 * value is the entry's `field` (default "v"), or, when the field is NULL or
 * "*", the whole entry as a table of its field/value pairs
 * (sl_source_emit_fields; a field given twice keeps its last value); its
 * time is the millisecond part of the entry id. An entry without that field,
 * one with a field or value that is not a string, or one deleted while
 * pending, is rejected (sl_source_reject names its id) and counts as
 * consumed.
 *
 * Connecting: AUTH and SELECT as the URL says (the connection is named
 * sluice:SOURCE:CONSUMER with CLIENT SETNAME), then
 * XGROUP CREATE stream group $|0 MKSTREAM (start = "last" | "first";
 * BUSYGROUP is fine). Reading: XREADGROUP GROUP group consumer COUNT 512,
 * first with an id (this consumer's own pending entries after `cursor`)
 * until a reply holds none, then with ">" (new entries, BLOCK 1000). At most
 * one XREADGROUP is in flight; while the core has paused the source the next
 * one is not sent, and resume sends it. A reply (at most 512 entries) is
 * emitted whole.
 *
 * Positions: `position` is the id of the last entry consumed ("0-0" when
 * none). `seek_position(pos)`, before start, makes the pending phase start
 * after pos (entries delivered before the crash but not covered by the
 * checkpoint are read again; those up to pos are acknowledged). `committed`
 * acknowledges every pending entry of this consumer up to the position
 * recorded for that checkpoint: XPENDING stream group - pos 1000 consumer,
 * then XACK of what it listed, until it lists fewer than 1000. Without
 * commits nothing is acknowledged (see docs/redis.md).
 *
 * Faults: a failed connection attempt (or one that takes over 2 s) is
 * retried after a back-off of 100 ms doubling up to 2 s, with a WARN line
 * each time; if Redis stays unreachable for SL_REDIS_CONNECT_TIMEOUT_MS the
 * source fails (sl_source_fail: exit code 5). A connection lost mid-run is
 * re-established the same way; reading goes on with the pending entries
 * after the last one consumed (delivered by Redis but lost with the
 * connection), then ">". Entries that ">" hands out again with ids up to the
 * last one consumed (a Redis restored from an older snapshot) are skipped.
 * A read that gets no reply within 15 s drops the connection.
 *
 * The source never ends by itself; stop ends it (sl_source_end(s, 0)) and
 * stops reading, but keeps the connection so that the final checkpoint's
 * commit can still acknowledge; close disconnects gracefully (pending
 * replies first, at most 2 s) and frees everything.
 */
#include "endpoint.h"
#include "log.h"
#include "luaapi.h"
#include "redis_url.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SL_REDIS_CONNECT_TIMEOUT_MS /* the test builds with a shorter one */
#define SL_REDIS_CONNECT_TIMEOUT_MS 30000 /* unreachable this long: fail */
#endif
#define SL_REDIS_BACKOFF_MIN_MS 100
#define SL_REDIS_BACKOFF_MAX_MS 2000
#define SL_REDIS_ATTEMPT_MS 2000        /* a connection attempt's deadline */
#define SL_REDIS_READ_DEADLINE_MS 15000 /* a read in flight without reply */
#define SL_REDIS_POLL_MS 20    /* connecting: check the socket's error */
#define SL_REDIS_CLOSE_MS 2000 /* graceful disconnect at close */
#define SL_REDIS_COUNT "512"
#define SL_REDIS_BLOCK "100" /* ms: acks queue behind a blocked read */
#define SL_REDIS_ACK_BATCH 10000
#define SL_REDIS_ACK_BATCH_S "10000"

/* An entry id "ms-seq". */
typedef struct rs_id_s {
  uint64_t ms, seq;
} rs_id_t;

enum {
  RS_IDLE,       /* no connection: waiting for the back-off timer */
  RS_CONNECTING, /* TCP connect, AUTH, SELECT, XGROUP CREATE */
  RS_READY,      /* reading */
  RS_CLOSING,    /* close: disconnecting */
  RS_FAILED      /* gave up (sl_source_fail) */
};

typedef struct rs_s {
  sl_source_t *s;
  sl_redis_url_t url;
  const char *stream, *group, *consumer;
  const char *field; /* NULL: the whole entry as a table */
  int start_first;
  redisAsyncContext *ac; /* the live connection, or NULL */
  int state;
  uv_timer_t timer;
  int timer_open;
  uint64_t backoff_ms;
  double attempt_ms; /* sl_now_ms() when this connection attempt began */
  double down_since; /* sl_now_ms() of the first failure of this outage */
  char last_err[160];
  int handshake; /* replies still due before READY */
  int reading;   /* an XREADGROUP is in flight */
  int pending_phase;
  rs_id_t cursor; /* pending phase: read entries after this id */
  rs_id_t last;   /* the last entry consumed */
  int have_last;
  rs_id_t ack_to; /* acknowledge pending entries up to this id */
  int ack_dirty;  /* ack_to moved since the last XPENDING round */
  int acking;     /* an XPENDING round is in flight */
  int started;
  int in_connect_cb; /* hiredis must not free the context under it */
  uint64_t acked;    /* entries acknowledged (for logs and tests) */
  int64_t lag;       /* the group's lag (XINFO GROUPS); -1 not known */
  double lag_asked_ms;
  int lag_asking; /* an XINFO GROUPS is in flight */
  sl_source_cb done;
} rs_t;

static const char *rs_name(rs_t *r) {
  return r->s->cfg->name;
}

static int rs_id_cmp(rs_id_t a, rs_id_t b) {
  if (a.ms != b.ms)
    return a.ms < b.ms ? -1 : 1;
  return a.seq < b.seq ? -1 : a.seq > b.seq;
}

/* Parses "ms-seq" (or "ms", seq 0) of n bytes. 0 ok, -1 malformed. */
static int rs_id_parse(const char *p, size_t n, rs_id_t *out) {
  uint64_t v[2] = {0, 0};
  int part = 0, digits = 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (c == '-' && part == 0 && digits > 0) {
      part = 1;
      digits = 0;
    } else if (c >= '0' && c <= '9' && digits < 20) {
      uint64_t d = (uint64_t)(c - '0');
      if (v[part] > (UINT64_MAX - d) / 10)
        return -1;
      v[part] = v[part] * 10 + d;
      digits++;
    } else {
      return -1;
    }
  }
  if (digits == 0)
    return -1;
  out->ms = v[0];
  out->seq = v[1];
  return 0;
}

static void rs_id_format(rs_id_t id, char out[48]) {
  snprintf(out, 48, "%" PRIu64 "-%" PRIu64, id.ms, id.seq);
}

static void rs_connect(rs_t *r);
static void rs_read(rs_t *r);
static void rs_ack_run(rs_t *r);

/* ---- the timer: back-off, attempt deadline, read watchdog, close ---- */

static void rs_on_timer(uv_timer_t *t);

static void rs_timer(rs_t *r, uint64_t ms) {
  if (r->timer_open)
    uv_timer_start(&r->timer, rs_on_timer, ms, 0);
}

static void rs_timer_stop(rs_t *r) {
  if (r->timer_open)
    uv_timer_stop(&r->timer);
}

static void rs_on_timer_closed(uv_handle_t *h) {
  rs_t *r = h->data;
  sl_source_t *s = r->s;
  sl_source_cb done = r->done;
  free(r);
  if (done)
    done(s);
}

/* The connection is gone (or never was): close the timer, then free. */
static void rs_finish_close(rs_t *r) {
  if (!r->timer_open) {
    rs_on_timer_closed((uv_handle_t *)&r->timer);
    return;
  }
  r->timer_open = 0;
  uv_close((uv_handle_t *)&r->timer, rs_on_timer_closed);
}

/* ---- connection failures and back-off ---- */

/* Drops the live connection without callbacks reaching this source. */
static void rs_drop(rs_t *r) {
  redisAsyncContext *ac = r->ac;
  r->ac = NULL;
  r->reading = 0;
  r->acking = 0;
  r->lag_asking = 0;
  if (ac)
    redisAsyncFree(ac); /* stale callbacks see ac != r->ac */
}

/* A connection attempt failed or the connection was lost: retry after the
 * back-off, or give up once Redis has been unreachable for too long. */
static void rs_failed(rs_t *r, const char *why) {
  if (r->state == RS_CLOSING || r->state == RS_FAILED)
    return;
  rs_drop(r);
  r->state = RS_IDLE;
  snprintf(r->last_err, sizeof r->last_err, "%s", why);
  double now = sl_now_ms();
  if (r->down_since == 0)
    r->down_since = now;
  double ct = sl_cfg_num(r->s->cfg, "connect_timeout_ms", 0);
  double give_up = ct > 0 ? ct : SL_REDIS_CONNECT_TIMEOUT_MS;
  if (now - r->down_since >= give_up) {
    char msg[320];
    snprintf(msg, sizeof msg, "redis %s:%d unreachable for %d s: %s",
             r->url.host, r->url.port, (int)(give_up / 1000), why);
    r->state = RS_FAILED;
    rs_timer_stop(r);
    sl_source_fail(r->s, msg);
    return;
  }
  if (r->backoff_ms == 0)
    r->backoff_ms = SL_REDIS_BACKOFF_MIN_MS;
  sl_log(SL_LOG_WARN, "source",
         "'%s': redis %s:%d: %s; retrying in %" PRIu64 " ms", rs_name(r),
         r->url.host, r->url.port, why, r->backoff_ms);
  rs_timer(r, r->backoff_ms);
  r->backoff_ms *= 2;
  if (r->backoff_ms > SL_REDIS_BACKOFF_MAX_MS)
    r->backoff_ms = SL_REDIS_BACKOFF_MAX_MS;
}

/* An error reply that retrying cannot fix (wrong password, key of another
 * type): the source fails at once. */
static int rs_permanent(const char *err) {
  static const char *const fatal[] = {
      "WRONGTYPE", "WRONGPASS",    "NOPERM",  "ERR invalid password",
      "NOAUTH",    "ERR DB index", "ERR AUTH"};
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
    if (!strncmp(err, fatal[i], strlen(fatal[i])))
      return 1;
  return 0;
}

static void rs_fatal(rs_t *r, const char *what, const char *err) {
  char msg[320];
  snprintf(msg, sizeof msg, "redis %s:%d: %s: %s", r->url.host, r->url.port,
           what, err);
  rs_drop(r);
  r->state = RS_FAILED;
  rs_timer_stop(r);
  sl_source_fail(r->s, msg);
}

static void rs_on_timer(uv_timer_t *t) {
  rs_t *r = t->data;
  switch (r->state) {
  case RS_IDLE:
    rs_connect(r);
    break;
  case RS_CONNECTING: {
    /* hiredis's libuv adapter drops poll errors, so a refused connect
     * would only show at the deadline: look at the socket's error */
    int err = 0;
    socklen_t len = sizeof err;
    if (r->ac && !(r->ac->c.flags & REDIS_CONNECTED) &&
        getsockopt(r->ac->c.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
        err != 0) {
      rs_failed(r, strerror(err));
      break;
    }
    if (sl_now_ms() - r->attempt_ms >= SL_REDIS_ATTEMPT_MS)
      rs_failed(r, "connection attempt timed out");
    else
      rs_timer(r, SL_REDIS_POLL_MS);
    break;
  }
  case RS_READY:
    if (r->reading)
      rs_failed(r, "no reply to a read within 15 s");
    break;
  case RS_CLOSING:
    rs_drop(r); /* did not disconnect in time */
    rs_finish_close(r);
    break;
  default:
    break;
  }
}

/* ---- commands ---- */

static int rs_cmd(rs_t *r, redisCallbackFn *fn, int argc, const char **argv,
                  const size_t *lens) {
  if (r->ac &&
      redisAsyncCommandArgv(r->ac, fn, r, argc, argv, lens) == REDIS_OK)
    return 0;
  if (r->in_connect_cb)
    rs_timer(r, 0); /* fails the attempt from the timer, outside hiredis */
  else
    rs_failed(r, "cannot send a command");
  return -1;
}

/* The callback's connection is not the live one (dropped, or being freed):
 * nothing of it may reach the source. */
static rs_t *rs_of(redisAsyncContext *ac, void *priv) {
  rs_t *r = priv;
  return r && r->ac == ac && ac->err == 0 ? r : NULL;
}

/* ---- acknowledging ---- */

static void rs_on_xack(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *rep = reply;
  rs_t *r = rs_of(ac, priv);
  if (!r) {
    if (priv && ((rs_t *)priv)->state != RS_CLOSING)
      ((rs_t *)priv)->ack_dirty = 1; /* redo after reconnecting */
    return;
  }
  if (!rep)
    return;
  if (rep->type == REDIS_REPLY_INTEGER)
    r->acked += (uint64_t)rep->integer;
  else if (rep->type == REDIS_REPLY_ERROR)
    sl_log(SL_LOG_WARN, "source", "'%s': XACK: %s", rs_name(r), rep->str);
}

static void rs_on_xpending(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *rep = reply;
  rs_t *r = rs_of(ac, priv);
  if (!r) {
    if (priv && ((rs_t *)priv)->state != RS_CLOSING) {
      ((rs_t *)priv)->ack_dirty = 1;
      ((rs_t *)priv)->acking = 0;
    }
    return;
  }
  r->acking = 0;
  if (!rep)
    return;
  if (rep->type != REDIS_REPLY_ARRAY) {
    sl_log(SL_LOG_WARN, "source", "'%s': XPENDING: %s", rs_name(r),
           rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    return;
  }
  size_t n = rep->elements;
  if (n > 0) {
    size_t argc = 3 + n;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    if (!argv || !lens) {
      free(argv);
      free(lens);
      sl_log(SL_LOG_ERROR, "source", "'%s': out of memory acknowledging",
             rs_name(r));
      r->ack_dirty = 1;
      return;
    }
    argv[0] = "XACK";
    argv[1] = r->stream;
    argv[2] = r->group;
    lens[0] = 4;
    lens[1] = strlen(r->stream);
    lens[2] = strlen(r->group);
    size_t k = 3;
    for (size_t i = 0; i < n; i++) {
      redisReply *e = rep->element[i];
      if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
          e->element[0]->type == REDIS_REPLY_STRING) {
        argv[k] = e->element[0]->str;
        lens[k++] = e->element[0]->len;
      }
    }
    int rc = k > 3 ? rs_cmd(r, rs_on_xack, (int)k, argv, lens) : 0;
    free(argv);
    free(lens);
    if (rc)
      return;
  }
  if (n >= SL_REDIS_ACK_BATCH)
    r->ack_dirty = 1; /* more to list: the XACK is ahead of the next round */
  rs_ack_run(r);
}

/* One XPENDING round for the entries up to ack_to, if it moved. */
static void rs_ack_run(rs_t *r) {
  if (r->state != RS_READY || r->acking || !r->ack_dirty)
    return;
  char to[48];
  rs_id_format(r->ack_to, to);
  const char *argv[] = {"XPENDING",           r->stream,  r->group, "-", to,
                        SL_REDIS_ACK_BATCH_S, r->consumer};
  r->ack_dirty = 0;
  if (rs_cmd(r, rs_on_xpending, 7, argv, NULL) == 0)
    r->acking = 1;
}

/* ---- reading ---- */

/* The value of `field` among an entry's field/value pairs, or NULL. */
static redisReply *rs_field(rs_t *r, redisReply *fields) {
  size_t flen = strlen(r->field);
  for (size_t i = 0; i + 1 < fields->elements; i += 2) {
    redisReply *f = fields->element[i], *v = fields->element[i + 1];
    if (f->type == REDIS_REPLY_STRING && f->len == flen &&
        !memcmp(f->str, r->field, flen) && v->type == REDIS_REPLY_STRING)
      return v;
  }
  return NULL;
}

#define RS_FIELDS_STACK 32 /* pairs of an entry that need no malloc */

/* Emits the whole entry (its field/value pairs) as one table record.
 * 0 ok, -1 rejected (*why says why). */
static int rs_emit_fields(rs_t *r, redisReply *fields, rs_id_t id, char *why,
                          size_t whylen) {
  const char *kv_stack[2 * RS_FIELDS_STACK], **kv = kv_stack;
  size_t lens_stack[2 * RS_FIELDS_STACK], *lens = lens_stack;
  size_t npairs = fields->elements / 2;
  char idtext[48];
  if (npairs > RS_FIELDS_STACK) {
    kv = malloc(2 * npairs * sizeof *kv);
    lens = malloc(2 * npairs * sizeof *lens);
    if (!kv || !lens) {
      free(kv);
      free(lens);
      rs_id_format(id, idtext);
      snprintf(why, whylen, "entry %s: out of memory (%zu fields)", idtext,
               npairs);
      return -1;
    }
  }
  int rc = 0;
  for (size_t i = 0; i < 2 * npairs; i++) {
    redisReply *f = fields->element[i];
    if (f->type != REDIS_REPLY_STRING) {
      rs_id_format(id, idtext);
      snprintf(why, whylen, "entry %s has a %s that is not a string", idtext,
               i % 2 ? "value" : "field");
      rc = -1;
      break;
    }
    kv[i] = f->str;
    lens[i] = f->len;
  }
  if (rc == 0)
    sl_source_emit_fields(r->s, kv, lens, npairs, (double)id.ms);
  if (kv != kv_stack) {
    free(kv);
    free(lens);
  }
  return rc;
}

/* Emits the entries of one XREADGROUP reply; returns how many it held. */
static size_t rs_emit_entries(rs_t *r, redisReply *entries) {
  sl_source_t *s = r->s;
  char why[160], idtext[48];
  for (size_t i = 0; i < entries->elements; i++) {
    redisReply *e = entries->element[i];
    rs_id_t id;
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        rs_id_parse(e->element[0]->str, e->element[0]->len, &id)) {
      sl_source_reject(s, "malformed stream entry in a reply");
      continue;
    }
    r->cursor = id;
    if (r->have_last && rs_id_cmp(id, r->last) <= 0)
      continue; /* consumed already (handed out again after a rollback) */
    r->last = id;
    r->have_last = 1;
    redisReply *fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY) {
      rs_id_format(id, idtext);
      snprintf(why, sizeof why, "entry %s was deleted while pending", idtext);
      sl_source_reject(s, why);
      continue;
    }
    if (!r->field) {
      if (rs_emit_fields(r, fields, id, why, sizeof why))
        sl_source_reject(s, why);
      continue;
    }
    redisReply *v = rs_field(r, fields);
    if (!v) {
      rs_id_format(id, idtext);
      snprintf(why, sizeof why, "entry %s has no field \"%.64s\"", idtext,
               r->field);
      sl_source_reject(s, why);
      continue;
    }
    sl_source_emit(s, v->str, v->len, (double)id.ms);
  }
  return entries->elements;
}

static void rs_on_read(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *rep = reply;
  rs_t *r = rs_of(ac, priv);
  if (!r)
    return; /* the connection went: its disconnect callback handles it */
  r->reading = 0;
  if (!rep)
    return;
  rs_timer_stop(r);
  sl_source_t *s = r->s;
  if (s->ended)
    return; /* stopped: pending entries stay pending, read again later */
  if (rep->type == REDIS_REPLY_ERROR) {
    if (rs_permanent(rep->str)) {
      rs_fatal(r, "XREADGROUP", rep->str);
      return;
    }
    /* e.g. NOGROUP after a Redis restart that lost the stream: reconnect,
     * which creates the group again */
    char why[200];
    snprintf(why, sizeof why, "XREADGROUP: %.180s", rep->str);
    rs_failed(r, why);
    return;
  }
  size_t n = 0;
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1) {
    redisReply *st = rep->element[0];
    if (st->type == REDIS_REPLY_ARRAY && st->elements >= 2 &&
        st->element[1]->type == REDIS_REPLY_ARRAY)
      n = rs_emit_entries(r, st->element[1]);
  }
  if (r->pending_phase && n == 0) {
    r->pending_phase = 0;
    sl_log(SL_LOG_DEBUG, "source", "'%s': pending entries read; reading new",
           rs_name(r));
  }
  sl_source_flush(s);
  if (!s->paused && !s->ended)
    rs_read(r);
}

/* ---- lag ---- */

/* XINFO GROUPS reply: one map (a flat array in RESP2) per group; the
 * group's "lag" is an integer, or nil when Redis cannot tell (entries were
 * deleted from the stream's middle). */
static void rs_on_xinfo(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *rep = reply;
  rs_t *r = rs_of(ac, priv);
  if (!r)
    return;
  r->lag_asking = 0;
  if (!rep || rep->type != REDIS_REPLY_ARRAY)
    return; /* an older Redis, or no stream: lag stays as it was */
  for (size_t g = 0; g < rep->elements; g++) {
    redisReply *m = rep->element[g];
    if (m->type != REDIS_REPLY_ARRAY)
      continue;
    const redisReply *name = NULL, *lag = NULL;
    for (size_t i = 0; i + 1 < m->elements; i += 2) {
      const redisReply *k = m->element[i];
      if (k->type != REDIS_REPLY_STRING && k->type != REDIS_REPLY_STATUS)
        continue;
      if (!strcmp(k->str, "name"))
        name = m->element[i + 1];
      else if (!strcmp(k->str, "lag"))
        lag = m->element[i + 1];
    }
    if (name && name->type == REDIS_REPLY_STRING &&
        !strcmp(name->str, r->group))
      r->lag = lag && lag->type == REDIS_REPLY_INTEGER ? lag->integer : -1;
  }
}

/* At most once a second: ahead of a read (a blocking XREADGROUP would hold
 * it back otherwise), and when scraped. */
static void rs_ask_lag(rs_t *r) {
  double now = sl_now_ms();
  if (r->lag_asking || now - r->lag_asked_ms < 1000)
    return;
  const char *argv[] = {"XINFO", "GROUPS", r->stream};
  r->lag_asked_ms = now;
  if (rs_cmd(r, rs_on_xinfo, 3, argv, NULL) == 0)
    r->lag_asking = 1;
}

/* The lag last heard; asks again when it is over a second old (so a
 * source paused by back-pressure, which sends no reads, still refreshes it
 * each time it is scraped). */
static int64_t rs_lag(sl_source_t *s) {
  rs_t *r = s->impl;
  if (!r || r->state != RS_READY)
    return -1;
  rs_ask_lag(r);
  return r->lag;
}

/* ---- reading ---- */

/* Sends the next XREADGROUP, unless one is in flight or the source is
 * paused, stopped or not connected. */
static void rs_read(rs_t *r) {
  sl_source_t *s = r->s;
  if (r->state != RS_READY || r->reading || s->paused || s->ended)
    return;
  rs_ask_lag(r);
  if (r->state != RS_READY)
    return;
  char from[48];
  const char *argv[12];
  int argc = 0;
  argv[argc++] = "XREADGROUP";
  argv[argc++] = "GROUP";
  argv[argc++] = r->group;
  argv[argc++] = r->consumer;
  argv[argc++] = "COUNT";
  argv[argc++] = SL_REDIS_COUNT;
  if (!r->pending_phase) {
    argv[argc++] = "BLOCK";
    argv[argc++] = SL_REDIS_BLOCK;
  }
  argv[argc++] = "STREAMS";
  argv[argc++] = r->stream;
  if (r->pending_phase) {
    rs_id_format(r->cursor, from);
    argv[argc++] = from;
  } else {
    argv[argc++] = ">";
  }
  if (rs_cmd(r, rs_on_read, argc, argv, NULL) == 0) {
    r->reading = 1;
    rs_timer(r, SL_REDIS_READ_DEADLINE_MS);
  }
}

/* ---- connecting ---- */

/* READY: the pending phase starts after the last entry consumed (or the
 * restored position), so entries delivered but lost with a connection are
 * read again, and nothing is emitted twice. */
static void rs_ready(rs_t *r) {
  r->state = RS_READY;
  rs_timer_stop(r);
  if (r->down_since != 0)
    sl_log(SL_LOG_INFO, "source", "'%s': connected to redis %s:%d", rs_name(r),
           r->url.host, r->url.port);
  r->down_since = 0;
  r->backoff_ms = 0;
  r->pending_phase = 1;
  if (r->have_last)
    r->cursor = r->last;
  else
    r->cursor = (rs_id_t){0, 0};
  rs_ack_run(r);
  rs_read(r);
}

static void rs_on_handshake(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *rep = reply;
  rs_t *r = rs_of(ac, priv);
  if (!r || !rep || r->state != RS_CONNECTING)
    return;
  if (rep->type == REDIS_REPLY_ERROR &&
      strncmp(rep->str, "BUSYGROUP", 9) != 0) {
    if (rs_permanent(rep->str)) {
      rs_fatal(r, "connecting", rep->str);
      return;
    }
    char why[200];
    snprintf(why, sizeof why, "%.190s", rep->str);
    rs_failed(r, why);
    return;
  }
  if (--r->handshake == 0)
    rs_ready(r);
}

static void rs_handshake(rs_t *r);

static void rs_on_connect(const redisAsyncContext *cac, int status) {
  rs_t *r = cac->data;
  if (!r || cac != r->ac || r->state != RS_CONNECTING)
    return;
  if (status != REDIS_OK) {
    char why[160];
    snprintf(why, sizeof why, "%s", cac->errstr[0] ? cac->errstr : "error");
    r->ac = NULL; /* hiredis frees it after this callback */
    rs_failed(r, why);
    return;
  }
  /* AUTH, SELECT and XGROUP CREATE pipelined; READY after the last reply */
  r->in_connect_cb = 1;
  rs_handshake(r);
  r->in_connect_cb = 0;
}

static void rs_handshake(rs_t *r) {
  char db[24];
  snprintf(db, sizeof db, "%d", r->url.db);
  r->handshake = 0;
  if (r->url.password[0]) {
    const char *argv[] = {"AUTH", r->url.password};
    if (rs_cmd(r, rs_on_handshake, 2, argv, NULL))
      return;
    r->handshake++;
  }
  /* named for CLIENT LIST (and tests): sluice:SOURCE:CONSUMER; no reply
   * awaited, an error is harmless */
  char name[160];
  snprintf(name, sizeof name, "sluice:%s:%s", rs_name(r), r->consumer);
  for (char *p = name; *p; p++)
    if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127)
      *p = '_';
  const char *setname[] = {"CLIENT", "SETNAME", name};
  if (rs_cmd(r, NULL, 3, setname, NULL))
    return;
  if (r->url.db != 0) {
    const char *argv[] = {"SELECT", db};
    if (rs_cmd(r, rs_on_handshake, 2, argv, NULL))
      return;
    r->handshake++;
  }
  const char *argv[] = {
      "XGROUP",  "CREATE", r->stream, r->group, r->start_first ? "0" : "$",
      "MKSTREAM"};
  if (rs_cmd(r, rs_on_handshake, 6, argv, NULL))
    return;
  r->handshake++;
}

static void rs_on_disconnect(const redisAsyncContext *cac, int status) {
  rs_t *r = cac->data;
  (void)status;
  if (!r || cac != r->ac)
    return;     /* dropped on purpose */
  r->ac = NULL; /* hiredis frees it after this callback */
  r->reading = 0;
  r->acking = 0;
  if (r->state == RS_CLOSING) {
    rs_timer_stop(r);
    rs_finish_close(r);
    return;
  }
  char why[160];
  snprintf(why, sizeof why, "connection lost: %s",
           cac->errstr[0] ? cac->errstr : "closed by the server");
  r->ack_dirty = 1; /* acks sent may not have reached Redis */
  rs_failed(r, why);
}

static void rs_connect(rs_t *r) {
  r->state = RS_CONNECTING;
  redisAsyncContext *ac = redisAsyncConnect(r->url.host, r->url.port);
  if (!ac) {
    rs_failed(r, "out of memory");
    return;
  }
  if (ac->err) {
    char why[160];
    snprintf(why, sizeof why, "%s", ac->errstr);
    redisAsyncFree(ac);
    rs_failed(r, why);
    return;
  }
  ac->data = r;
  if (redisLibuvAttach(ac, r->s->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    rs_failed(r, "cannot attach to the event loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, rs_on_connect);
  redisAsyncSetDisconnectCallback(ac, rs_on_disconnect);
  r->ac = ac;
  r->attempt_ms = sl_now_ms();
  rs_timer(r, SL_REDIS_POLL_MS);
}

/* ---- the source ---- */

/* The impl, made by seek_position or start (whichever runs first). */
static rs_t *rs_impl(sl_source_t *s) {
  if (!s->impl) {
    rs_t *r = calloc(1, sizeof *r);
    if (!r) {
      sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
      return NULL;
    }
    r->s = s;
    r->lag = -1;
    s->impl = r;
  }
  return s->impl;
}

static int rs_start(sl_source_t *s) {
  const sl_node_cfg_t *cfg = s->cfg;
  rs_t *r = rs_impl(s);
  if (!r)
    return -1;
  const char *why = NULL;
  const char *url = sl_cfg_str(cfg, "url"), *stream = sl_cfg_str(cfg, "stream");
  const char *start_at = sl_cfg_str(cfg, "start_at");
  const char *group = sl_cfg_str(cfg, "group");
  const char *consumer = sl_cfg_str(cfg, "consumer");
  const char *field = sl_cfg_str(cfg, "field");
  if (!url || sl_redis_url_parse(url, &r->url, &why)) {
    sl_log(SL_LOG_ERROR, "source", "'%s': bad url: %s", cfg->name,
           why ? why : "missing");
    goto fail;
  }
  if (!stream || !stream[0]) {
    sl_log(SL_LOG_ERROR, "source", "'%s': no stream", cfg->name);
    goto fail;
  }
  if (start_at && strcmp(start_at, "first") && strcmp(start_at, "last")) {
    sl_log(SL_LOG_ERROR, "source", "'%s': start must be \"first\" or \"last\"",
           cfg->name);
    goto fail;
  }
  r->stream = stream;
  r->group = group && group[0] ? group : cfg->name;
  r->consumer = consumer && consumer[0] ? consumer : cfg->name;
  if (!field || !strcmp(field, "*"))
    r->field = NULL; /* the whole entry */
  else
    r->field = field[0] ? field : "v";
  r->start_first = start_at && !strcmp(start_at, "first");
  uv_timer_init(s->loop, &r->timer);
  r->timer.data = r;
  r->timer_open = 1;
  r->started = 1;
  sl_log(SL_LOG_INFO, "source",
         "'%s': reading stream \"%s\" as %s/%s from redis %s:%d", cfg->name,
         r->stream, r->group, r->consumer, r->url.host, r->url.port);
  rs_connect(r);
  return 0;
fail:
  free(r);
  s->impl = NULL;
  return -1;
}

static rs_t *rs_live(sl_source_t *s) {
  rs_t *r = s->impl;
  return r && r->started ? r : NULL;
}

static void rs_pause(sl_source_t *s) {
  (void)s; /* the next XREADGROUP waits for resume */
}

static void rs_resume(sl_source_t *s) {
  rs_t *r = rs_live(s);
  if (r)
    rs_read(r);
}

static void rs_stop(sl_source_t *s) {
  rs_t *r = rs_live(s);
  if (r && r->state == RS_READY && r->reading)
    rs_timer_stop(r); /* its reply is dropped; the entries stay pending */
  if (!s->ended)
    sl_source_end(s, 0);
}

static void rs_close(sl_source_t *s, sl_source_cb done) {
  rs_t *r = s->impl;
  s->impl = NULL;
  if (!r || !r->started) { /* also an impl seek_position made */
    free(r);
    done(s);
    return;
  }
  r->done = done;
  int was = r->state;
  r->state = RS_CLOSING;
  if (r->ac && was == RS_READY) {
    /* XACKs in flight still reach Redis; then the disconnect callback */
    rs_timer(r, SL_REDIS_CLOSE_MS);
    redisAsyncDisconnect(r->ac);
    return;
  }
  rs_drop(r);
  rs_finish_close(r);
}

static int rs_position(sl_source_t *s, sl_buf_t *out) {
  rs_t *r = s->impl;
  char id[48];
  rs_id_format(r && r->have_last ? r->last : (rs_id_t){0, 0}, id);
  return sl_buf_append(out, id, strlen(id));
}

static int rs_seek_position(sl_source_t *s, const uint8_t *pos, size_t len) {
  rs_t *r = rs_impl(s);
  rs_id_t id;
  if (!r)
    return -1;
  if (r->started || rs_id_parse((const char *)pos, len, &id)) {
    sl_log(SL_LOG_ERROR, "source", "'%s': cannot resume after \"%.*s\"%s",
           s->cfg->name, (int)(len > 64 ? 64 : len), (const char *)pos,
           r->started ? ": already started" : ": not an entry id");
    return -1;
  }
  if (id.ms == 0 && id.seq == 0)
    return 0; /* nothing was consumed: start as a fresh consumer */
  r->last = id;
  r->have_last = 1;
  /* the restored checkpoint covers the entries up to id: release them */
  r->ack_to = id;
  r->ack_dirty = 1;
  return 0;
}

static void rs_committed(sl_source_t *s, uint64_t ckpt, const uint8_t *pos,
                         size_t len) {
  rs_t *r = rs_live(s);
  rs_id_t id;
  (void)ckpt;
  if (!r || r->state == RS_CLOSING || r->state == RS_FAILED)
    return;
  if (rs_id_parse((const char *)pos, len, &id)) {
    sl_log(SL_LOG_WARN, "source",
           "'%s': committed position \"%.*s\" is not "
           "an entry id",
           rs_name(r), (int)(len > 64 ? 64 : len), (const char *)pos);
    return;
  }
  if (rs_id_cmp(id, r->ack_to) <= 0)
    return;
  r->ack_to = id;
  r->ack_dirty = 1;
  rs_ack_run(r);
}

const sl_source_vt_t sl_source_redis_vt = {
    .kind = "redis",
    .start = rs_start,
    .pause = rs_pause,
    .resume = rs_resume,
    .stop = rs_stop,
    .close = rs_close,
    .position = rs_position,
    .seek_position = rs_seek_position,
    .committed = rs_committed,
    .lag = rs_lag,
    .lag_unit = "records",
};
