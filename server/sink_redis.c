/* sink_redis.c - the `redis` sink: one Redis command per record.
 *
 * Runs on the I/O thread. Owns its hiredis connection (an async one on the
 * I/O loop through hiredis's libuv adapter under at_least_once, a blocking
 * one under exactly_once), a retry timer, and the records not yet
 * acknowledged by Redis.
 *
 * Per record (cfg: url, command, key; "{key}" in the key template is
 * replaced by the record's key; value and key as text via sl_codec_line, a
 * nil key as ""):
 *   xadd:    XADD KEY * v VALUE [k RECORDKEY]   (k only when there is a key)
 *   hset:    HSET KEY FIELD VALUE (FIELD: the `field` template, by default
 *            the record's key)
 *   set:     SET KEY VALUE
 *   publish: PUBLISH KEY VALUE
 *
 * at_least_once: commands are pipelined on the async connection. Every
 * command is also kept, RESP-formatted, in a local queue until its reply
 * arrives (replies come in order, so a reply pops the queue's head). Above
 * 10000 unanswered commands or 8 MiB queued the sink is busy, and ready
 * again below half of both. An error reply is counted and logged (at most
 * one line a second), not fatal. When the connection drops (Redis restarted)
 * the sink reconnects with back-off and sends the whole queue again, so the
 * commands whose replies were lost may be applied twice (at-least-once).
 * After a connect, nothing is sent before a PING is answered, so a Redis
 * still loading its data set (LOADING) is retried, not fed.
 *
 * exactly_once: Redis itself stages the records of a checkpoint, and a
 * server-side script applies them atomically with a marker. Keys (PREFIX from
 * the url, default "sluice"; P the pipeline, S the sink):
 *   PREFIX:P:S:marker          the id of the last checkpoint applied
 *   PREFIX:P:S:runs            INCR'd at start: this run's number R
 *   PREFIX:P:S:staged:R:E      list: epoch E's commands, one msgpack array
 *                              ["HSET", key, field, value] per entry
 *   PREFIX:P:S:lists           set of the staged lists that exist
 * An epoch is what the sink received between two precommits. `write`
 * encodes entries into a local buffer; past 1 MiB, at every flush and at
 * precommit they go out as one RPUSH (after an SADD of the list's name), with
 * a blocking round trip: no staging write is ever in flight. If the round
 * trip fails (Redis restarted), the entries are kept, the sink reconnects
 * and compares LLEN with the count it knows was acknowledged: equal to that
 * plus the batch, the RPUSH was applied; equal to that, it is pushed again;
 * anything else means Redis lost staged entries, and the sink fails (the
 * pipeline restarts from its last checkpoint). So a list never holds a
 * duplicate. precommit(id) pushes what waits, closes the epoch (remembered
 * as {E, id, count}) and appends the state (see below). commit(id) runs the
 * script (EVAL) over the closed epochs up to id: if GET marker >= id it does
 * nothing; else it checks that every list not yet applied holds exactly its
 * count (else an error, nothing applied), replays each entry with
 * redis.pcall (an entry's error is counted, not fatal, so the script never
 * stops half-way), DELs the lists, SREMs them, and SETs the marker to id.
 * A commit that cannot reach Redis is retried on reconnect (asynchronous
 * commits are allowed); restore completes it after a crash anyway.
 * restore(state of id), before start: runs the same script for id (finishing
 * an interrupted commit; a no-op when it was applied), sets the marker to id
 * (lowering it, with a WARN, when a later checkpoint had been applied: its
 * writes are replayed again; idempotent for set and hset, duplicated for
 * xadd and publish), then DELs every staged list left (records after id are
 * replayed by the sources). restore(NULL) (a fresh start) DELs the staged
 * lists and the marker, so the new run's ids start over; it never touches
 * the user's keys. Marker ids compare as decimal strings, exact for any u64
 * (the final checkpoint's id is UINT64_MAX).
 * State of checkpoint id (little-endian u64s): version (1), id, n, then n
 * triples {epoch E, run R, closing checkpoint id, entries}: every epoch not
 * yet committed when id was precommitted, oldest first, id's own last.
 *
 * Faults: a Redis that cannot be reached is retried with back-off (100 ms
 * doubling to 2 s, a WARN each time); after 30 s without a connection the
 * sink fails with an ERROR (the pipeline exits 5, Redis unreachable). Blocking
 * calls (exactly_once) have a 1 s connect timeout and a 60 s reply timeout.
 */
#include "endpoint.h"
#define SL_SINK_FINAL_ID UINT64_MAX /* checkpoint.h: SL_CKPT_FINAL */
#include "log.h"
#include "redis_url.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
/* defines static functions, among them one named on_close */
#include <hiredis/adapters/libuv.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define RS_MAX_CMDS 10000
#define RS_MAX_BYTES (8u << 20)
#define RS_STAGE_AT (1u << 20)
#define RS_BACKOFF_MIN 100
#define RS_BACKOFF_MAX 2000
#define RS_GIVE_UP_MS 30000 /* default of the conf's connect_timeout */
#define RS_CONNECT_TIMEOUT_MS 1000
#define RS_REPLY_TIMEOUT_S 60
#define RS_STATE_VERSION 1

enum { RS_XADD, RS_HSET, RS_SET, RS_PUBLISH };

/* A closed (precommitted) epoch not yet committed. */
typedef struct rs_epoch_s {
  uint64_t epoch, run, id, count;
} rs_epoch_t;

typedef struct rsink_s {
  sl_sink_t *k;
  sl_redis_url_t url;
  int cmd;
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
  rs_epoch_t *eps;
  size_t n_eps, cap_eps;
  uint64_t commit_want; /* a commit to retry on reconnect; 0 = none */
  int has_commit_want;
  /* The markers must grow across runs, so the checkpoint taken at END
   * (SL_CKPT_FINAL to the core) is staged under the id after the last one
   * this sink saw (which is below the id the coordinator gives that image,
   * and so below every id of the next run). */
  uint64_t last_id, final_id;
} rsink_t;

static double rs_now(void) {
  return (double)uv_hrtime() / 1e6;
}

/* ---- small encoders ---- */

static void rs_put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rs_get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static int rs_put_u32(sl_buf_t *b, uint32_t v) {
  return sl_buf_append(b, &v, sizeof v);
}

/* RESP: one command of argc arguments. 0 ok, -1 OOM. */
static int rs_resp(sl_buf_t *b, int argc, const char **argv,
                   const size_t *lens) {
  char head[32];
  int n = snprintf(head, sizeof head, "*%d\r\n", argc);
  if (sl_buf_append(b, head, (size_t)n) < 0)
    return -1;
  for (int i = 0; i < argc; i++) {
    n = snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
    if (sl_buf_append(b, head, (size_t)n) < 0 ||
        sl_buf_append(b, argv[i], lens[i]) < 0 ||
        sl_buf_append(b, "\r\n", 2) < 0)
      return -1;
  }
  return 0;
}

/* msgpack: an array of argc strings (what the commit script unpacks). */
static int rs_msgpack(sl_buf_t *b, int argc, const char **argv,
                      const size_t *lens) {
  uint8_t h[5];
  h[0] = (uint8_t)(0x90 | argc); /* argc <= 7 */
  if (sl_buf_append(b, h, 1) < 0)
    return -1;
  for (int i = 0; i < argc; i++) {
    size_t n = lens[i], hl;
    if (n < 32) {
      h[0] = (uint8_t)(0xa0 | n);
      hl = 1;
    } else if (n < 256) {
      h[0] = 0xd9;
      h[1] = (uint8_t)n;
      hl = 2;
    } else if (n < 65536) {
      h[0] = 0xda;
      h[1] = (uint8_t)(n >> 8);
      h[2] = (uint8_t)n;
      hl = 3;
    } else {
      h[0] = 0xdb;
      h[1] = (uint8_t)(n >> 24);
      h[2] = (uint8_t)(n >> 16);
      h[3] = (uint8_t)(n >> 8);
      h[4] = (uint8_t)n;
      hl = 5;
    }
    if (sl_buf_append(b, h, hl) < 0 || sl_buf_append(b, argv[i], n) < 0)
      return -1;
  }
  return 0;
}

/* "PREFIX:PIPELINE:SINK:suffix" (malloc'd) or NULL. */
static char *rs_key(const rsink_t *l, const char *suffix) {
  const sl_node_cfg_t *c = l->k->cfg;
  const char *p = c->pipeline ? c->pipeline : "pipeline";
  size_t n =
      strlen(l->url.prefix) + strlen(p) + strlen(c->name) + strlen(suffix) + 4;
  char *s = malloc(n);
  if (s)
    snprintf(s, n, "%s:%s:%s:%s", l->url.prefix, p, c->name, suffix);
  return s;
}

/* The key template with every "{key}" replaced by key[0..kn). */
static int rs_expand(sl_buf_t *out, const char *tpl, const uint8_t *key,
                     size_t kn) {
  out->len = 0;
  for (const char *p = tpl; *p;) {
    const char *m = strstr(p, "{key}");
    size_t n = m ? (size_t)(m - p) : strlen(p);
    if (sl_buf_append(out, p, n) < 0)
      return -1;
    if (!m)
      break;
    if (sl_buf_append(out, key, kn) < 0)
      return -1;
    p = m + 5;
  }
  return 0;
}

/* Builds the command of one record into argv (which point into l's
 * scratch buffers). Returns argc, or -1 (malformed, or OOM). */
static int rs_build(rsink_t *l, const sl_codec_record_t *rec, const char **argv,
                    size_t *lens) {
  static const char *names[] = {"XADD", "HSET", "SET", "PUBLISH"};
  int has_key = !(rec->key_end - rec->key == 1 && rec->key[0] == 0x00);
  l->tmp_v.len = l->tmp_k.len = 0;
  if (sl_codec_line(&l->tmp_v, rec->value, rec->value_end) < 0)
    return -1;
  if (has_key && sl_codec_line(&l->tmp_k, rec->key, rec->key_end) < 0)
    return -1;
  if (rs_expand(&l->tmp_key, l->k->cfg->key, l->tmp_k.data, l->tmp_k.len) < 0)
    return -1;
  /* sl_buf data may be NULL when empty: point at "" then */
  const char *v = l->tmp_v.len ? (const char *)l->tmp_v.data : "";
  const char *kk = l->tmp_k.len ? (const char *)l->tmp_k.data : "";
  const char *key = l->tmp_key.len ? (const char *)l->tmp_key.data : "";
  int argc = 0;
#define ARG(p, n) (argv[argc] = (p), lens[argc++] = (n))
  ARG(names[l->cmd], strlen(names[l->cmd]));
  ARG(key, l->tmp_key.len);
  switch (l->cmd) {
  case RS_XADD:
    ARG("*", 1);
    ARG("v", 1);
    ARG(v, l->tmp_v.len);
    if (has_key) {
      ARG("k", 1);
      ARG(kk, l->tmp_k.len);
    }
    break;
  case RS_HSET: /* the field: the record's key, or the field template */
    if (l->k->cfg->field) {
      if (rs_expand(&l->tmp_field, l->k->cfg->field, l->tmp_k.data,
                    l->tmp_k.len) < 0)
        return -1;
      ARG(l->tmp_field.len ? (const char *)l->tmp_field.data : "",
          l->tmp_field.len);
    } else {
      ARG(kk, l->tmp_k.len);
    }
    ARG(v, l->tmp_v.len);
    break;
  default:
    ARG(v, l->tmp_v.len);
  }
#undef ARG
  return argc;
}

/* ---- common: failing, error replies, back-off ---- */

static void rs_fail(rsink_t *l, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (l->failed)
    return;
  l->failed = 1;
  l->q.len = l->q_head = l->q_n = l->q_sent = 0;
  l->pend.len = l->pend_n = 0;
  uv_timer_stop(&l->timer);
  /* "redis at HOST:PORT ...": Redis cannot be reached or refused us */
  sl_sink_fail_code(l->k, strncmp(why, "redis at ", 9) ? 3 : 5, why);
  if (l->k->busy)
    sl_sink_ready(l->k);
  if (l->finish_done) {
    sl_sink_cb done = l->finish_done;
    l->finish_done = NULL;
    done(l->k);
  }
}

/* An error reply: counted; logged at most once a second. */
static void rs_error_reply(rsink_t *l, const char *msg) {
  l->k->errors++;
  l->err_count++;
  double now = rs_now();
  if (now - l->err_logged_ms >= 1000) {
    sl_log(SL_LOG_ERROR, "sink",
           "'%s': redis replied %s (%" PRIu64
           " error replies since the last such line)",
           l->k->cfg->name, msg, l->err_count);
    l->err_count = 0;
    l->err_logged_ms = now;
  }
}

/* Cannot reach Redis (why): WARN and arm the retry timer, or after 30 s
 * fail. */
static void rs_retry_later(rsink_t *l, const char *why, uv_timer_cb cb) {
  double now = rs_now();
  if (l->failed || l->closing)
    return;
  if (l->down_since == 0)
    l->down_since = now;
  double give_up = l->k->cfg->connect_timeout_ms > 0
                       ? l->k->cfg->connect_timeout_ms
                       : RS_GIVE_UP_MS;
  if (now - l->down_since >= give_up) {
    rs_fail(l, "redis at %s:%d unreachable for %d s (%s): giving up",
            l->url.host, l->url.port, (int)(give_up / 1000), why);
    return;
  }
  if (l->backoff == 0)
    l->backoff = RS_BACKOFF_MIN;
  sl_log(SL_LOG_WARN, "sink",
         "'%s': cannot reach redis at %s:%d (%s); "
         "retrying in %" PRIu64 " ms",
         l->k->cfg->name, l->url.host, l->url.port, why, l->backoff);
  uv_timer_start(&l->timer, cb, l->backoff, 0);
  l->backoff *= 2;
  if (l->backoff > RS_BACKOFF_MAX)
    l->backoff = RS_BACKOFF_MAX;
}

static void rs_up(rsink_t *l) {
  if (l->down_since != 0)
    sl_log(SL_LOG_INFO, "sink", "'%s': connected to redis at %s:%d",
           l->k->cfg->name, l->url.host, l->url.port);
  l->down_since = 0;
  l->backoff = 0;
}

static int rs_is_transient(const char *msg) {
  return !strncmp(msg, "LOADING", 7) || !strncmp(msg, "BUSY", 4) ||
         !strncmp(msg, "TRYAGAIN", 8) || !strncmp(msg, "MASTERDOWN", 10);
}

/* ---- at_least_once: the async connection ---- */

static void rs_a_connect(rsink_t *l);

static size_t rs_q_bytes(const rsink_t *l) {
  return l->q.len - l->q_head;
}

static void rs_a_check_ready(rsink_t *l) {
  if (l->k->busy && l->q_n < RS_MAX_CMDS / 2 &&
      rs_q_bytes(l) < RS_MAX_BYTES / 2)
    sl_sink_ready(l->k);
}

static void rs_a_maybe_finished(rsink_t *l) {
  if (l->finish_done && l->q_n == 0) {
    sl_sink_cb done = l->finish_done;
    l->finish_done = NULL;
    done(l->k);
  }
}

static void rs_a_on_reply(redisAsyncContext *ac, void *r, void *priv) {
  rsink_t *l = priv;
  redisReply *reply = r;
  (void)ac;
  if (!reply || l->failed || l->q_n == 0)
    return; /* the connection went away: the command stays queued */
  if (reply->type == REDIS_REPLY_ERROR)
    rs_error_reply(l, reply->str);
  uint32_t n;
  memcpy(&n, l->q.data + l->q_head, sizeof n);
  l->q_head += sizeof n + n;
  l->q_n--;
  l->q_sent--;
  if (l->q_n == 0) {
    l->q.len = l->q_head = 0;
  } else if (l->q_head > (1u << 20) && l->q_head > l->q.len / 2) {
    memmove(l->q.data, l->q.data + l->q_head, l->q.len - l->q_head);
    l->q.len -= l->q_head;
    l->q_head = 0;
  }
  rs_a_check_ready(l);
  rs_a_maybe_finished(l);
}

/* Sends the queued commands not yet sent on this connection. */
static void rs_a_send(rsink_t *l) {
  if (!l->ready || !l->ac)
    return;
  size_t off = l->q_head;
  for (size_t i = 0; i < l->q_sent; i++) {
    uint32_t n;
    memcpy(&n, l->q.data + off, sizeof n);
    off += sizeof n + n;
  }
  while (l->q_sent < l->q_n) {
    uint32_t n;
    memcpy(&n, l->q.data + off, sizeof n);
    if (redisAsyncFormattedCommand(l->ac, rs_a_on_reply, l,
                                   (const char *)l->q.data + off + sizeof n,
                                   n) != REDIS_OK)
      return; /* disconnecting: the disconnect callback reconnects */
    off += sizeof n + n;
    l->q_sent++;
  }
}

static void rs_a_on_setup(redisAsyncContext *ac, void *r, void *priv) {
  rsink_t *l = priv;
  redisReply *reply = r;
  if (!reply || l->failed || ac != l->ac)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    if (rs_is_transient(reply->str)) {
      sl_log(SL_LOG_WARN, "sink", "'%s': redis not ready: %s", l->k->cfg->name,
             reply->str);
      redisAsyncDisconnect(ac); /* the disconnect callback retries */
    } else {
      rs_fail(l, "redis at %s:%d refused the connection setup: %s", l->url.host,
              l->url.port, reply->str);
    }
    return;
  }
  if (--l->setup_left == 0) {
    rs_up(l);
    l->ready = 1;
    l->q_sent = 0;
    rs_a_send(l);
  }
}

static void rs_a_on_timer(uv_timer_t *t) {
  rs_a_connect(t->data);
}

static void rs_a_on_connect(const redisAsyncContext *ac, int status) {
  rsink_t *l = ac->data;
  if (status == REDIS_OK)
    return;     /* the setup replies say when it is ready */
  l->ac = NULL; /* hiredis frees it */
  l->ready = 0;
  if (l->closing)
    return;
  rs_retry_later(l, ac->errstr, rs_a_on_timer);
}

static void rs_a_finish_close(rsink_t *l);

static void rs_a_on_disconnect(const redisAsyncContext *ac, int status) {
  rsink_t *l = ac->data;
  l->ac = NULL;
  l->ready = 0;
  l->q_sent = 0;
  if (l->dropping)
    return;
  if (l->closing) {
    rs_a_finish_close(l);
    return;
  }
  rs_retry_later(l, status == REDIS_OK ? "disconnected" : ac->errstr,
                 rs_a_on_timer);
}

/* Gives the connection up (why) and reconnects later. */
static void rs_a_drop(rsink_t *l, const char *why) {
  char w[256];
  snprintf(w, sizeof w, "%s", why);
  redisAsyncContext *ac = l->ac;
  l->ac = NULL;
  l->ready = 0;
  l->q_sent = 0;
  l->dropping = 1;
  redisAsyncFree(ac);
  l->dropping = 0;
  rs_retry_later(l, w, rs_a_on_timer);
}

/* hiredis 0.14's libuv adapter ignores a poll error (libuv reports
 * POLLERR as a status, e.g. a refused connect or a reset connection), so
 * the connection would hang: every 200 ms the sink reads the socket's
 * pending error itself, and gives a connect 2 s to complete. */
static void rs_a_on_probe(uv_timer_t *t) {
  rsink_t *l = t->data;
  int err = 0;
  socklen_t n = sizeof err;
  if (!l->ac || l->closing)
    return;
  if (getsockopt(l->ac->c.fd, SOL_SOCKET, SO_ERROR, &err, &n) == 0 && err)
    rs_a_drop(l, strerror(err));
  else if (!l->ready && rs_now() - l->connect_at > 2000)
    rs_a_drop(l, "no answer");
}

static void rs_a_connect(rsink_t *l) {
  if (l->failed || l->closing)
    return;
  redisAsyncContext *ac = redisAsyncConnect(l->url.host, l->url.port);
  if (!ac) {
    rs_fail(l, "out of memory");
    return;
  }
  if (ac->err) {
    char why[128];
    snprintf(why, sizeof why, "%s", ac->errstr);
    redisAsyncFree(ac);
    rs_retry_later(l, why, rs_a_on_timer);
    return;
  }
  ac->data = l;
  if (redisLibuvAttach(ac, l->k->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    rs_fail(l, "cannot attach the redis connection to the loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, rs_a_on_connect);
  redisAsyncSetDisconnectCallback(ac, rs_a_on_disconnect);
  l->ac = ac;
  l->ready = 0;
  l->connect_at = rs_now();
  l->setup_left = 1;
  if (l->url.password[0]) {
    redisAsyncCommand(ac, rs_a_on_setup, l, "AUTH %s", l->url.password);
    l->setup_left++;
  }
  if (l->url.db) {
    redisAsyncCommand(ac, rs_a_on_setup, l, "SELECT %d", l->url.db);
    l->setup_left++;
  }
  redisAsyncCommand(ac, rs_a_on_setup, l, "PING");
}

typedef int (*rs_enc_fn)(sl_buf_t *b, int argc, const char **argv,
                         const size_t *lens);

/* Renders every record of r as one command, encoded by enc behind a u32
 * length, appended to q (counted in *count). 0 ok; -1 malformed batch; -2
 * out of memory (the sink has failed). */
static int rs_queue(rsink_t *l, sl_codec_reader_t *r, sl_buf_t *q,
                    size_t *count, rs_enc_fn enc) {
  sl_codec_record_t rec;
  const char *argv[8];
  size_t lens[8];
  int rc;
  while ((rc = sl_codec_reader_next(r, &rec)) == 1) {
    int argc = rs_build(l, &rec, argv, lens);
    if (argc < 0)
      return -1;
    size_t at = q->len;
    if (rs_put_u32(q, 0) < 0 || enc(q, argc, argv, lens) < 0) {
      q->len = at;
      rs_fail(l, "out of memory");
      return -2;
    }
    uint32_t n = (uint32_t)(q->len - at - sizeof n);
    memcpy(q->data + at, &n, sizeof n);
    (*count)++;
  }
  return rc < 0 ? -1 : 0;
}

static int rs_a_write(rsink_t *l, sl_codec_reader_t *r) {
  int rc = rs_queue(l, r, &l->q, &l->q_n, rs_resp);
  if (rc == -2)
    return 0;
  rs_a_send(l);
  if (l->q_n > RS_MAX_CMDS || rs_q_bytes(l) > RS_MAX_BYTES)
    l->k->busy = 1;
  return rc;
}

/* ---- exactly_once: the blocking connection ---- */

/* Connects, authenticates, selects the db and PINGs. NULL with why. */
static redisContext *rs_s_connect(const sl_redis_url_t *u, char *why,
                                  size_t n) {
  struct timeval tv = {RS_CONNECT_TIMEOUT_MS / 1000,
                       (RS_CONNECT_TIMEOUT_MS % 1000) * 1000};
  redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
  if (!c) {
    snprintf(why, n, "out of memory");
    return NULL;
  }
  if (c->err) {
    snprintf(why, n, "%s", c->errstr);
    redisFree(c);
    return NULL;
  }
  struct timeval rt = {RS_REPLY_TIMEOUT_S, 0};
  redisSetTimeout(c, rt);
  char db[16];
  snprintf(db, sizeof db, "%d", u->db);
  for (int i = 0; i < 3; i++) {
    if ((i == 0 && !u->password[0]) || (i == 1 && !u->db))
      continue;
    redisReply *r = i == 0   ? redisCommand(c, "AUTH %s", u->password)
                    : i == 1 ? redisCommand(c, "SELECT %s", db)
                             : redisCommand(c, "PING");
    if (!r || r->type == REDIS_REPLY_ERROR) {
      snprintf(why, n, "%s", r ? r->str : c->errstr);
      if (r)
        freeReplyObject(r);
      redisFree(c);
      return NULL;
    }
    freeReplyObject(r);
  }
  return c;
}

/* Connects with back-off (blocking) for up to 30 s. NULL after an ERROR. */
static redisContext *rs_s_connect_wait(const sl_redis_url_t *u,
                                       const char *name) {
  double start = rs_now();
  unsigned backoff = RS_BACKOFF_MIN;
  char why[256];
  for (;;) {
    redisContext *c = rs_s_connect(u, why, sizeof why);
    if (c)
      return c;
    if (rs_now() - start >= RS_GIVE_UP_MS) {
      sl_log(SL_LOG_ERROR, "sink",
             "'%s': redis at %s:%d unreachable for %d s (%s): giving up", name,
             u->host, u->port, RS_GIVE_UP_MS / 1000, why);
      return NULL;
    }
    sl_log(SL_LOG_WARN, "sink",
           "'%s': cannot reach redis at %s:%d (%s); retrying in %u ms", name,
           u->host, u->port, why, backoff);
    struct timespec ts = {backoff / 1000, (long)(backoff % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
      ;
    backoff = backoff * 2 > RS_BACKOFF_MAX ? RS_BACKOFF_MAX : backoff * 2;
  }
}

/* The commit script: see the top comment. KEYS: marker, lists set, the
 * staged lists; ARGV: id, then per list its closing id and entry count.
 * Returns {applied (0/1), entries replayed, entries that failed}. */
static const char rs_commit_lua[] =
    "local function ge(a, b)\n"
    "  if #a ~= #b then return #a > #b end\n"
    "  return a >= b\n"
    "end\n"
    "local m = redis.call('GET', KEYS[1])\n"
    "if m and ge(m, ARGV[1]) then return {0, 0, 0} end\n"
    "for i = 3, #KEYS do\n"
    "  local j = 2 * (i - 2)\n"
    "  if not (m and ge(m, ARGV[j])) then\n"
    "    local n = redis.call('LLEN', KEYS[i])\n"
    "    if n ~= tonumber(ARGV[j + 1]) then\n"
    "      return redis.error_reply('sluice: staged list ' .. KEYS[i] ..\n"
    "        ' holds ' .. n .. ' entries, expected ' .. ARGV[j + 1] ..\n"
    "        ' (redis lost staged writes?)')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local done, failed = 0, 0\n"
    "for i = 3, #KEYS do\n"
    "  if not (m and ge(m, ARGV[2 * (i - 2)])) then\n"
    "    local n = redis.call('LLEN', KEYS[i])\n"
    "    for at = 0, n - 1, 1000 do\n"
    "      local es = redis.call('LRANGE', KEYS[i], at, at + 999)\n"
    "      for _, e in ipairs(es) do\n"
    "        local r = redis.pcall(unpack(cmsgpack.unpack(e)))\n"
    "        if type(r) == 'table' and r.err then failed = failed + 1 end\n"
    "        done = done + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', KEYS[i])\n"
    "  redis.call('SREM', KEYS[2], KEYS[i])\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "return {1, done, failed}\n";

/* Runs the commit script for id over eps[0..n). 0 ok; -1 I/O error (the
 * context is unusable: *io set) or an error reply (*why). */
static int rs_s_commit(redisContext *c, const char *name, const char *marker,
                       const char *lists, const char *staged_prefix,
                       uint64_t id, const rs_epoch_t *eps, size_t n, int *io) {
  size_t argc = 3 + 2 + 3 * n + 1;
  const char **argv = calloc(argc, sizeof *argv);
  size_t *lens = calloc(argc, sizeof *lens);
  char *nums = calloc(3 * n + 3, 32);
  int rc = -1;
  *io = 0;
  if (!argv || !lens || !nums) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", name);
    goto out;
  }
  size_t a = 0, u = 0;
#define NUM(fmt, ...)                                                          \
  (snprintf(nums + 32 * u, 32, fmt, __VA_ARGS__), nums + 32 * u++)
  argv[a++] = "EVAL";
  argv[a++] = rs_commit_lua;
  argv[a++] = NUM("%zu", n + 2);
  argv[a++] = marker;
  argv[a++] = lists;
  for (size_t i = 0; i < n; i++) {
    size_t kn = strlen(staged_prefix) + 48;
    char *key = malloc(kn);
    if (!key) {
      sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", name);
      for (size_t j = 0; j < i; j++)
        free((char *)argv[5 + j]);
      goto out;
    }
    snprintf(key, kn, "%s%" PRIu64 ":%" PRIu64, staged_prefix, eps[i].run,
             eps[i].epoch);
    argv[a++] = key;
  }
  argv[a++] = NUM("%" PRIu64, id);
  for (size_t i = 0; i < n; i++) {
    argv[a++] = NUM("%" PRIu64, eps[i].id);
    argv[a++] = NUM("%" PRIu64, eps[i].count);
  }
#undef NUM
  for (size_t i = 0; i < a; i++)
    lens[i] = strlen(argv[i]);
  redisReply *r = redisCommandArgv(c, (int)a, argv, lens);
  for (size_t i = 0; i < n; i++)
    free((char *)argv[5 + i]);
  if (!r) {
    *io = 1;
    sl_log(SL_LOG_WARN, "sink",
           "'%s': commit of checkpoint %" PRIu64 " did not complete: %s", name,
           id, c->errstr);
  } else if (r->type == REDIS_REPLY_ERROR) {
    *io = rs_is_transient(r->str);
    sl_log(*io ? SL_LOG_WARN : SL_LOG_ERROR, "sink",
           "'%s': commit of checkpoint %" PRIu64 " failed: %s", name, id,
           r->str);
  } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
    rc = 0;
    if (r->element[0]->integer && r->element[2]->integer)
      sl_log(SL_LOG_ERROR, "sink",
             "'%s': checkpoint %" PRIu64 ": %lld of %lld "
             "commands failed in redis (skipped)",
             name, id, r->element[2]->integer, r->element[1]->integer);
  } else {
    sl_log(SL_LOG_ERROR, "sink", "'%s': unexpected reply to the commit", name);
  }
  if (r)
    freeReplyObject(r);
out:
  free(argv);
  free(lens);
  free(nums);
  return rc;
}

/* A simple blocking command; the reply (caller frees) or NULL (I/O error,
 * logged) or an error reply (logged, freed, NULL). */
static redisReply *rs_s_cmd(redisContext *c, const char *name, int argc,
                            const char **argv) {
  size_t lens[8];
  for (int i = 0; i < argc; i++)
    lens[i] = strlen(argv[i]);
  redisReply *r = redisCommandArgv(c, argc, argv, lens);
  if (!r) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': redis %s: %s", name, argv[0],
           c->errstr);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': redis %s: %s", name, argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

/* DELs every staged list in the lists set, then the set. 0 ok. */
static int rs_s_drop_staged(redisContext *c, const char *name,
                            const char *lists) {
  const char *sm[] = {"SMEMBERS", lists};
  redisReply *r = rs_s_cmd(c, name, 2, sm);
  if (!r)
    return -1;
  int rc = 0;
  for (size_t i = 0; i < r->elements && rc == 0; i++) {
    if (r->element[i]->type != REDIS_REPLY_STRING)
      continue;
    const char *d[] = {"DEL", r->element[i]->str};
    redisReply *x = rs_s_cmd(c, name, 2, d);
    rc = x ? 0 : -1;
    if (x)
      freeReplyObject(x);
  }
  if (rc == 0 && r->elements > 0)
    sl_log(SL_LOG_INFO, "sink", "'%s': dropped %zu staged list(s)", name,
           r->elements);
  freeReplyObject(r);
  if (rc == 0) {
    const char *d[] = {"DEL", lists};
    redisReply *x = rs_s_cmd(c, name, 2, d);
    rc = x ? 0 : -1;
    if (x)
      freeReplyObject(x);
  }
  return rc;
}

static void rs_e_on_timer(uv_timer_t *t);

/* The connection broke (why): drop it; the timer reconnects. */
static void rs_e_lost(rsink_t *l, const char *why) {
  char w[256];
  snprintf(w, sizeof w, "%s", why);
  if (l->sc)
    redisFree(l->sc);
  l->sc = NULL;
  rs_retry_later(l, w, rs_e_on_timer);
}

/* After a reconnect: did the RPUSH whose reply was lost land? 0 = the
 * pending entries are still to push (or were found applied), -1 failed. */
static int rs_e_reconcile(rsink_t *l) {
  char key[600];
  snprintf(key, sizeof key, "%s%" PRIu64 ":%" PRIu64, l->k_staged, l->run,
           l->epoch);
  const char *a[] = {"LLEN", key};
  redisReply *r = rs_s_cmd(l->sc, l->k->cfg->name, 2, a);
  if (!r)
    return -1;
  long long n = r->integer;
  freeReplyObject(r);
  if ((uint64_t)n == l->epoch_count + l->pend_n && l->pend_n > 0) {
    l->epoch_count += l->pend_n; /* it landed: do not push it again */
    l->pend.len = l->pend_n = 0;
  } else if ((uint64_t)n != l->epoch_count) {
    rs_fail(l,
            "staged list %s holds %lld entries, expected %" PRIu64
            ": redis lost staged writes; restart from the last checkpoint",
            key, n, l->epoch_count);
    return -1;
  }
  return 0;
}

/* Ensures a connection; blocking when `wait`, else one attempt (the timer
 * retries). 0 connected. */
static int rs_e_ensure(rsink_t *l, int wait) {
  if (l->sc)
    return 0;
  if (l->failed)
    return -1;
  char why[256];
  redisContext *c = wait ? rs_s_connect_wait(&l->url, l->k->cfg->name)
                         : rs_s_connect(&l->url, why, sizeof why);
  if (!c) {
    if (wait)
      rs_fail(l, "redis at %s:%d unreachable", l->url.host, l->url.port);
    else
      rs_retry_later(l, why, rs_e_on_timer);
    return -1;
  }
  l->sc = c;
  uv_timer_stop(&l->timer);
  rs_up(l);
  if (l->run && rs_e_reconcile(l) < 0)
    return -1;
  return 0;
}

/* Pushes the pending entries (one SADD + RPUSH round trip). 0 ok. */
static int rs_e_push(rsink_t *l, int wait) {
  if (l->failed)
    return -1;
  if (l->pend_n == 0)
    return 0;
  if (rs_e_ensure(l, wait) < 0)
    return -1;
  if (l->pend_n == 0)
    return 0; /* the reconnect found them applied */
  char key[600];
  snprintf(key, sizeof key, "%s%" PRIu64 ":%" PRIu64, l->k_staged, l->run,
           l->epoch);
  size_t argc = 2 + l->pend_n;
  const char **argv = malloc(argc * sizeof *argv);
  size_t *lens = malloc(argc * sizeof *lens);
  if (!argv || !lens) {
    free(argv);
    free(lens);
    rs_fail(l, "out of memory");
    return -1;
  }
  argv[0] = "RPUSH";
  lens[0] = 5;
  argv[1] = key;
  lens[1] = strlen(key);
  size_t off = 0;
  for (size_t i = 0; i < l->pend_n; i++) {
    uint32_t n;
    memcpy(&n, l->pend.data + off, sizeof n);
    argv[2 + i] = (const char *)l->pend.data + off + sizeof n;
    lens[2 + i] = n;
    off += sizeof n + n;
  }
  const char *sadd[] = {"SADD", l->k_lists, key};
  size_t sadd_lens[] = {4, strlen(l->k_lists), strlen(key)};
  redisReply *r1 = NULL, *r2 = NULL;
  int ok = redisAppendCommandArgv(l->sc, 3, sadd, sadd_lens) == REDIS_OK &&
           redisAppendCommandArgv(l->sc, (int)argc, argv, lens) == REDIS_OK &&
           redisGetReply(l->sc, (void **)&r1) == REDIS_OK &&
           redisGetReply(l->sc, (void **)&r2) == REDIS_OK;
  free(argv);
  free(lens);
  int rc = 0;
  if (!ok) {
    rc = -1;
    if (l->sc->err == REDIS_ERR_OOM)
      rs_fail(l, "out of memory");
    else
      rs_e_lost(l, l->sc->errstr);
  } else if (r1->type == REDIS_REPLY_ERROR || r2->type == REDIS_REPLY_ERROR) {
    const char *e = r1->type == REDIS_REPLY_ERROR ? r1->str : r2->str;
    rc = -1;
    if (rs_is_transient(e))
      rs_e_lost(l, e); /* nothing applied: pushed again after reconnect */
    else
      rs_fail(l, "cannot stage in redis: %s", e);
  } else {
    l->epoch_count += l->pend_n;
    l->pend.len = l->pend_n = 0;
  }
  if (r1)
    freeReplyObject(r1);
  if (r2)
    freeReplyObject(r2);
  return rc;
}

/* Pushes everything pending, reconnecting (blocking) as needed, for up to
 * 60 s. 0 ok, -1 failed (the sink has failed). */
static int rs_e_push_all(rsink_t *l) {
  double start = rs_now();
  while (l->pend_n > 0 && !l->failed) {
    if (rs_e_push(l, 1) == 0)
      break;
    if (!l->failed && rs_now() - start > 2 * RS_GIVE_UP_MS)
      rs_fail(l, "cannot stage in redis at %s:%d", l->url.host, l->url.port);
  }
  return l->failed ? -1 : 0;
}

static void rs_e_check_ready(rsink_t *l) {
  if (l->k->busy && l->pend.len < RS_MAX_BYTES / 2)
    sl_sink_ready(l->k);
}

static void rs_e_want_commit(rsink_t *l, uint64_t id) {
  if (!l->has_commit_want || l->commit_want < id)
    l->commit_want = id;
  l->has_commit_want = 1;
}

/* Commits the closed epochs up to id. 0 ok (or deferred to a reconnect),
 * -1 failed (logged). */
static int rs_e_commit(rsink_t *l, uint64_t id, int wait) {
  size_t n = 0;
  while (n < l->n_eps && l->eps[n].id != id)
    n++;
  if (n == l->n_eps)
    return -1;
  n++;
  if (rs_e_ensure(l, wait) < 0) {
    if (l->failed)
      return -1;
    rs_e_want_commit(l, id); /* retried on reconnect */
    return 0;
  }
  int io;
  if (rs_s_commit(l->sc, l->k->cfg->name, l->k_marker, l->k_lists, l->k_staged,
                  id, l->eps, n, &io) < 0) {
    if (!io)
      return -1;
    rs_e_want_commit(l, id);
    rs_e_lost(l, "commit interrupted");
    return 0;
  }
  l->n_eps -= n;
  memmove(l->eps, l->eps + n, l->n_eps * sizeof *l->eps);
  if (l->has_commit_want && l->commit_want <= id)
    l->has_commit_want = 0;
  return 0;
}

static void rs_e_on_timer(uv_timer_t *t) {
  rsink_t *l = t->data;
  if (rs_e_ensure(l, 0) < 0)
    return;
  if (rs_e_push(l, 0) < 0)
    return;
  if (l->has_commit_want && rs_e_commit(l, l->commit_want, 0) < 0)
    rs_fail(l, "cannot commit checkpoint %" PRIu64, l->commit_want);
  rs_e_check_ready(l);
}

static int rs_e_write(rsink_t *l, sl_codec_reader_t *r) {
  int rc = rs_queue(l, r, &l->pend, &l->pend_n, rs_msgpack);
  if (rc == -2)
    return 0;
  if (l->pend.len >= RS_STAGE_AT && l->sc)
    rs_e_push(l, 0);
  if (l->pend.len > RS_MAX_BYTES)
    l->k->busy = 1;
  return rc;
}

/* ---- the vtable ---- */

static void rs_free_mem(rsink_t *l);

/* exactly_once start: key names, the connection, this run's number. */
static int rs_e_start(rsink_t *l) {
  const char *name = l->k->cfg->name;
  l->k_marker = rs_key(l, "marker");
  l->k_runs = rs_key(l, "runs");
  l->k_lists = rs_key(l, "lists");
  l->k_staged = rs_key(l, "staged:");
  if (!l->k_marker || !l->k_runs || !l->k_lists || !l->k_staged) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", name);
    return -1;
  }
  l->sc = rs_s_connect_wait(&l->url, name);
  if (!l->sc)
    return -1;
  const char *incr[] = {"INCR", l->k_runs};
  redisReply *r = rs_s_cmd(l->sc, name, 2, incr);
  if (!r)
    return -1;
  l->run = (uint64_t)r->integer;
  freeReplyObject(r);
  l->epoch = 1;
  return 0;
}

static int rs_start(sl_sink_t *k) {
  const sl_node_cfg_t *c = k->cfg;
  const char *why = NULL;
  static const char *cmds[] = {"xadd", "hset", "set", "publish"};
  rsink_t *l = calloc(1, sizeof *l);
  if (!l) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", c->name);
    return -1;
  }
  l->k = k;
  l->cmd = -1;
  l->last_id = k->restored_id;
  for (int i = 0; i < 4 && c->command; i++)
    if (!strcmp(c->command, cmds[i]))
      l->cmd = i;
  if (!c->url || sl_redis_url_parse(c->url, &l->url, &why) < 0 || l->cmd < 0 ||
      !c->key) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': %s", c->name,
           why       ? why
           : !c->url ? "no url"
           : !c->key ? "no key"
                     : "bad command");
    free(l);
    return -1;
  }
  l->eo = c->exactly_once;
  if (l->eo && rs_e_start(l) < 0) {
    rs_free_mem(l);
    return -1;
  }
  uv_timer_init(k->loop, &l->timer);
  uv_timer_init(k->loop, &l->probe);
  l->timer.data = l->probe.data = l;
  l->timers_open = 2;
  k->impl = l;
  if (!l->eo) { /* connects from the loop; start never waits */
    uv_timer_start(&l->timer, rs_a_on_timer, 0, 0);
    uv_timer_start(&l->probe, rs_a_on_probe, 200, 200);
  }
  return 0;
}

static int rs_write(sl_sink_t *k, const uint8_t *data, size_t len) {
  rsink_t *l = k->impl;
  sl_codec_reader_t r;
  if (sl_codec_reader_init(&r, data, len) < 0)
    return -1;
  if (l->failed)
    return 0; /* the pipeline is failing: drop */
  return l->eo ? rs_e_write(l, &r) : rs_a_write(l, &r);
}

static void rs_flush(sl_sink_t *k) {
  rsink_t *l = k->impl;
  if (l && l->eo && l->sc && !l->failed) {
    rs_e_push(l, 0);
    rs_e_check_ready(l);
  }
}

static void rs_finish(sl_sink_t *k, sl_sink_cb done) {
  rsink_t *l = k->impl;
  if (!l || l->failed) {
    done(k);
    return;
  }
  l->finishing = 1;
  if (l->eo) {        /* stage everything; the final checkpoint commits it */
    rs_e_push_all(l); /* a failure called sl_sink_fail */
    done(k);
    return;
  }
  l->finish_done = done;
  rs_a_maybe_finished(l);
}

static void rs_free_mem(rsink_t *l) {
  if (l->sc)
    redisFree(l->sc);
  sl_buf_free(&l->tmp_v);
  sl_buf_free(&l->tmp_k);
  sl_buf_free(&l->tmp_key);
  sl_buf_free(&l->tmp_field);
  sl_buf_free(&l->q);
  sl_buf_free(&l->pend);
  free(l->k_marker);
  free(l->k_runs);
  free(l->k_lists);
  free(l->k_staged);
  free(l->eps);
  free(l);
}

static void rs_free(rsink_t *l) {
  sl_sink_t *k = l->k;
  sl_sink_cb done = l->close_done;
  rs_free_mem(l);
  done(k);
}

static void rs_a_finish_close(rsink_t *l) {
  if (l->ac || l->timers_open > 0)
    return;
  rs_free(l);
}

static void rs_on_timer_closed(uv_handle_t *h) {
  rsink_t *l = h->data;
  l->timers_open--;
  rs_a_finish_close(l);
}

static void rs_close(sl_sink_t *k, sl_sink_cb done) {
  rsink_t *l = k->impl;
  k->impl = NULL;
  if (!l) {
    done(k);
    return;
  }
  l->closing = 1;
  l->close_done = done;
  if (l->ac) {
    /* commands still unanswered are dropped (a stop without a final
     * checkpoint); redisAsyncFree calls their callbacks with NULL, and the
     * disconnect callback when it was connected */
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    redisAsyncFree(ac);
  }
  uv_close((uv_handle_t *)&l->timer, rs_on_timer_closed);
  uv_close((uv_handle_t *)&l->probe, rs_on_timer_closed);
}

static int rs_precommit(sl_sink_t *k, uint64_t id, sl_buf_t *state) {
  rsink_t *l = k->impl;
  if (!k->cfg->exactly_once)
    return 0;
  if (!l || l->failed) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot precommit checkpoint %" PRIu64,
           k->cfg->name, id);
    return -1;
  }
  /* a push that fails on a broken connection reconnects (blocking) and
   * pushes again until it lands or 30 s pass */
  if (rs_e_push_all(l) < 0)
    return -1;
  if (id == SL_SINK_FINAL_ID)
    id = l->final_id = l->last_id + 1;
  l->last_id = id;
  if (l->n_eps == l->cap_eps) {
    size_t cap = l->cap_eps ? l->cap_eps * 2 : 4;
    rs_epoch_t *e = realloc(l->eps, cap * sizeof *e);
    if (!e)
      goto oom;
    l->eps = e;
    l->cap_eps = cap;
  }
  l->eps[l->n_eps++] = (rs_epoch_t){l->epoch, l->run, id, l->epoch_count};
  uint8_t w[8];
  int bad = 0;
  rs_put_u64(w, RS_STATE_VERSION);
  bad |= sl_buf_append(state, w, 8);
  rs_put_u64(w, id);
  bad |= sl_buf_append(state, w, 8);
  rs_put_u64(w, l->n_eps);
  bad |= sl_buf_append(state, w, 8);
  for (size_t i = 0; i < l->n_eps; i++) {
    const rs_epoch_t *e = &l->eps[i];
    uint64_t v[4] = {e->epoch, e->run, e->id, e->count};
    for (int j = 0; j < 4; j++) {
      rs_put_u64(w, v[j]);
      bad |= sl_buf_append(state, w, 8);
    }
  }
  if (bad) {
    l->n_eps--;
    goto oom;
  }
  l->epoch++;
  l->epoch_count = 0;
  return 0;
oom:
  sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", k->cfg->name);
  return -1;
}

static int rs_commit(sl_sink_t *k, uint64_t id) {
  rsink_t *l = k->impl;
  if (!k->cfg->exactly_once)
    return 0;
  if (!l || l->failed) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot commit checkpoint %" PRIu64,
           k->cfg->name, id);
    return -1;
  }
  if (id == SL_SINK_FINAL_ID)
    id = l->final_id;
  size_t i = 0;
  while (i < l->n_eps && l->eps[i].id != id)
    i++;
  if (i == l->n_eps) {
    sl_log(SL_LOG_ERROR, "sink",
           "'%s': cannot commit checkpoint %" PRIu64 ": not precommitted",
           k->cfg->name, id);
    return -1;
  }
  return rs_e_commit(l, id, 0);
}

static int rs_restore(sl_sink_t *k, const uint8_t *state, size_t len) {
  const sl_node_cfg_t *c = k->cfg;
  if (!c->exactly_once)
    return 0;
  rsink_t tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.k = k;
  const char *why = NULL;
  if (!c->url || sl_redis_url_parse(c->url, &tmp.url, &why) < 0) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': %s", c->name, why ? why : "no url");
    return -1;
  }
  uint64_t id = 0, n = 0;
  if (state) {
    if (len < 24 || rs_get_u64(state) != RS_STATE_VERSION ||
        (n = rs_get_u64(state + 16)) > (len - 24) / 32 || len != 24 + n * 32) {
      sl_log(SL_LOG_ERROR, "sink", "'%s': bad checkpoint state (%zu bytes)",
             c->name, len);
      return -1;
    }
    id = rs_get_u64(state + 8);
  }
  k->restored_id = id;
  rs_epoch_t *eps = calloc(n + 1, sizeof *eps);
  char *marker = rs_key(&tmp, "marker"), *lists = rs_key(&tmp, "lists");
  char *staged = rs_key(&tmp, "staged:");
  redisContext *rc = NULL;
  int ret = -1;
  if (!eps || !marker || !lists || !staged) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", c->name);
    goto out;
  }
  for (uint64_t i = 0; i < n; i++) {
    const uint8_t *p = state + 24 + 32 * i;
    eps[i] = (rs_epoch_t){rs_get_u64(p), rs_get_u64(p + 8), rs_get_u64(p + 16),
                          rs_get_u64(p + 24)};
  }
  rc = rs_s_connect_wait(&tmp.url, c->name);
  if (!rc)
    goto out;
  char idstr[32];
  snprintf(idstr, sizeof idstr, "%" PRIu64, id);
  if (state) {
    int io;
    if (rs_s_commit(rc, c->name, marker, lists, staged, id, eps, (size_t)n,
                    &io) < 0)
      goto out;
    const char *gs[] = {"GETSET", marker, idstr};
    redisReply *r = rs_s_cmd(rc, c->name, 3, gs);
    if (!r)
      goto out;
    if (r->type == REDIS_REPLY_STRING &&
        (r->len > strlen(idstr) ||
         (r->len == strlen(idstr) && strcmp(r->str, idstr) > 0)))
      sl_log(SL_LOG_WARN, "sink",
             "'%s': redis already holds the writes of checkpoint %s, later "
             "than the restored %s: they are applied again by the replay",
             c->name, r->str, idstr);
    freeReplyObject(r);
  } else {
    const char *d[] = {"DEL", marker};
    redisReply *r = rs_s_cmd(rc, c->name, 2, d);
    if (!r)
      goto out;
    freeReplyObject(r);
  }
  if (rs_s_drop_staged(rc, c->name, lists) < 0)
    goto out;
  ret = 0;
out:
  if (rc)
    redisFree(rc);
  free(eps);
  free(marker);
  free(lists);
  free(staged);
  return ret;
}

const sl_sink_vt_t sl_sink_redis_vt = {
    .kind = "redis",
    .start = rs_start,
    .write = rs_write,
    .flush = rs_flush,
    .finish = rs_finish,
    .close = rs_close,
    .precommit = rs_precommit,
    .commit = rs_commit,
    .restore = rs_restore,
};
