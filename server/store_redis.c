/* store_redis.c - the "redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P]"
 * checkpoint store (see store.h, redis_url.h), over hiredis's synchronous
 * API: the store is used by one thread at a time (a libuv work thread
 * commits, the main thread reads at start-up), and blocking is fine there.
 *
 * Owns: one redisContext (connected on open, re-made after a drop) and, in
 * database DB, every key under PREFIX (docs/redis.md, "Redis key layout"):
 *   PREFIX:chk:<id>   string, the image bytes (ckpt.h)
 *   PREFIX:ckpts      sorted set of ids (member = decimal id, score = id)
 *   PREFIX:latest     string, the decimal id of the newest complete image
 * Two pipelines sharing one Redis database must use different prefixes.
 * Threads: one at a time.
 *
 * Commit: SET PREFIX:chk:<id> first; only then, in one MULTI/EXEC, ZADD the
 * id to PREFIX:ckpts and SET PREFIX:latest, so `latest` never names an image
 * that is not stored, and the index and latest move together. Then every id
 * beyond the newest `keep` (never the one latest names) is dropped, image
 * and index entry in one MULTI/EXEC; a failed prune is logged and does not
 * fail the commit, which is stored by then. (Durability is Redis's: with
 * `appendonly no` a Redis crash loses what it had not saved.)
 *
 * Connection: connect timeout 2 s, command timeout 10 s, TCP keep-alive,
 * AUTH when there is a password, SELECT DB, CLIENT SETNAME
 * sluice-ckpt-<pid>. A call on a dead connection (Redis restarted, the
 * client killed) reconnects and retries once: every operation here is
 * idempotent. Failures return -1 with "cannot reach redis at HOST:PORT: ..."
 * or "redis at HOST:PORT: COMMAND: ..."; no message holds the password.
 *
 * latest: a missing key is "none" (0); a garbage value gives 0 with *id = 0
 * and *err, like the file store. read: a missing image is -1 with *err.
 */
#include "log.h"
#include "redis_url.h"
#include "store_impl.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SL_REDIS_CONNECT_TIMEOUT_S 2
#define SL_REDIS_COMMAND_TIMEOUT_S 10
#define SL_REDIS_KEY_MAX 192 /* prefix (< 128) + ":chk:" + 20 digits */

typedef struct {
  sl_store_t base;
  sl_redis_url_t url;
  char where[300]; /* "HOST:PORT" (IPv6 in brackets), for messages */
  redisContext *c; /* NULL when not connected */
} sl_store_redis_t;

static const sl_store_vt_t sl_store_redis_vt;

/* ---- keys and replies -------------------------------------------------------
 */

static void sl_redis_key(const sl_store_redis_t *r, char *key,
                         const char *what) {
  snprintf(key, SL_REDIS_KEY_MAX, "%s:%s", r->url.prefix, what);
}

static void sl_redis_image_key(const sl_store_redis_t *r, char *key,
                               uint64_t id) {
  snprintf(key, SL_REDIS_KEY_MAX, "%s:chk:%" PRIu64, r->url.prefix, id);
}

static int sl_redis_oom(char **err) {
  return sl_store_errf(err, "checkpoint store: out of memory");
}

/* ---- connection -------------------------------------------------------------
 */

static void sl_redis_drop(sl_store_redis_t *r) {
  if (r->c)
    redisFree(r->c);
  r->c = NULL;
}

/* One setup command on a fresh connection; -1 with *err (reply text, never
 * the arguments, which may hold the password). */
static int sl_redis_setup(sl_store_redis_t *r, redisReply *rep,
                          const char *what, char **err) {
  int rc = 0;
  if (!rep)
    rc = sl_store_errf(err, "cannot reach redis at %s: %s: %s", r->where, what,
                       r->c->errstr[0] ? r->c->errstr : "no reply");
  else if (rep->type == REDIS_REPLY_ERROR)
    rc = sl_store_errf(err, "redis at %s: %s failed: %s", r->where, what,
                       rep->str);
  freeReplyObject(rep);
  return rc;
}

/* Connects, AUTHs, SELECTs. 0 ok; -1 with *err and no connection. */
static int sl_redis_connect(sl_store_redis_t *r, char **err) {
  struct timeval cto = {SL_REDIS_CONNECT_TIMEOUT_S, 0};
  struct timeval rto = {SL_REDIS_COMMAND_TIMEOUT_S, 0};
  sl_redis_drop(r);
  r->c = redisConnectWithTimeout(r->url.host, r->url.port, cto);
  if (!r->c)
    return sl_redis_oom(err);
  if (r->c->err) {
    sl_store_errf(err, "cannot reach redis at %s: %s", r->where, r->c->errstr);
    sl_redis_drop(r);
    return -1;
  }
  if (redisSetTimeout(r->c, rto) != REDIS_OK ||
      redisEnableKeepAlive(r->c) != REDIS_OK) {
    sl_store_errf(err, "cannot reach redis at %s: %s", r->where,
                  r->c->errstr[0] ? r->c->errstr : "cannot set timeouts");
    sl_redis_drop(r);
    return -1;
  }
  if ((r->url.password[0] &&
       sl_redis_setup(r, redisCommand(r->c, "AUTH %s", r->url.password), "AUTH",
                      err) != 0) ||
      sl_redis_setup(r, redisCommand(r->c, "SELECT %d", r->url.db), "SELECT",
                     err) != 0) {
    sl_redis_drop(r);
    return -1;
  }
  /* A name shows which sluice holds the connection (CLIENT LIST); a server
   * that refuses it (ACLs) is no reason to fail. */
  freeReplyObject(
      redisCommand(r->c, "CLIENT SETNAME sluice-ckpt-%ld", (long)getpid()));
  if (r->c->err) {
    sl_store_errf(err, "cannot reach redis at %s: %s", r->where, r->c->errstr);
    sl_redis_drop(r);
    return -1;
  }
  return 0;
}

/* A command's reply, or NULL with *err: a connection failure drops the
 * connection and sets *lost; an error reply is freed and reported. */
static redisReply *sl_redis_check(sl_store_redis_t *r, redisReply *rep,
                                  const char *what, int *lost, char **err) {
  if (!rep) {
    sl_store_errf(err, "cannot reach redis at %s: %s: %s", r->where, what,
                  r->c && r->c->errstr[0] ? r->c->errstr : "no reply");
    sl_redis_drop(r);
    *lost = 1;
    return NULL;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    sl_store_errf(err, "redis at %s: %s: %s", r->where, what, rep->str);
    freeReplyObject(rep);
    return NULL;
  }
  return rep;
}

/* ---- the operations, each idempotent (retried once after a drop) ------------
 */

typedef int (*sl_redis_op_t)(sl_store_redis_t *r, void *arg, int *lost,
                             char **err);

/* Runs op on a live connection. A connection that was already open may have
 * died since the last call (Redis restarted, the client killed): if op loses
 * it, reconnect and run op once more. */
static int sl_redis_run(sl_store_redis_t *r, sl_redis_op_t op, void *arg,
                        char **err) {
  int reused = r->c != NULL;
  if (!r->c && sl_redis_connect(r, err) != 0)
    return -1;
  int lost = 0;
  int rc = op(r, arg, &lost, err);
  if (rc == 0 || !lost || !reused)
    return rc;
  sl_log(SL_LOG_WARN, "checkpoint", "%s; reconnecting",
         err && *err ? *err : "redis connection lost");
  if (err) {
    free(*err);
    *err = NULL;
  }
  if (sl_redis_connect(r, err) != 0)
    return -1;
  lost = 0;
  return op(r, arg, &lost, err);
}

/* Sends the queued MULTI ... EXEC (n commands between them) and checks that
 * every reply is fine. */
static int sl_redis_exec(sl_store_redis_t *r, int n, const char *what,
                         int *lost, char **err) {
  int rc = 0;
  for (int i = 0; i < n + 2; i++) {
    void *v = NULL;
    if (redisGetReply(r->c, &v) != REDIS_OK) {
      sl_redis_check(r, NULL, what, lost, err);
      return -1;
    }
    redisReply *rep = v;
    if (rc == 0 && rep->type == REDIS_REPLY_ERROR)
      rc = sl_store_errf(err, "redis at %s: %s: %s", r->where, what, rep->str);
    else if (rc == 0 && i == n + 1 && rep->type != REDIS_REPLY_ARRAY)
      rc = sl_store_errf(err, "redis at %s: %s: transaction aborted", r->where,
                         what);
    else if (rc == 0 && i == n + 1)
      for (size_t j = 0; j < rep->elements && rc == 0; j++)
        if (rep->element[j]->type == REDIS_REPLY_ERROR)
          rc = sl_store_errf(err, "redis at %s: %s: %s", r->where, what,
                             rep->element[j]->str);
    freeReplyObject(rep);
  }
  return rc;
}

typedef struct {
  uint64_t id;
  const void *data;
  size_t len;
} sl_redis_put_t;

static int sl_redis_op_commit(sl_store_redis_t *r, void *arg, int *lost,
                              char **err) {
  sl_redis_put_t *p = arg;
  char img[SL_REDIS_KEY_MAX], idx[SL_REDIS_KEY_MAX], lat[SL_REDIS_KEY_MAX];
  sl_redis_image_key(r, img, p->id);
  sl_redis_key(r, idx, "ckpts");
  sl_redis_key(r, lat, "latest");
  redisReply *rep =
      sl_redis_check(r, redisCommand(r->c, "SET %s %b", img, p->data, p->len),
                     "SET image", lost, err);
  if (!rep)
    return -1;
  freeReplyObject(rep);
  if (redisAppendCommand(r->c, "MULTI") != REDIS_OK ||
      redisAppendCommand(r->c, "ZADD %s %" PRIu64 " %" PRIu64, idx, p->id,
                         p->id) != REDIS_OK ||
      redisAppendCommand(r->c, "SET %s %" PRIu64, lat, p->id) != REDIS_OK ||
      redisAppendCommand(r->c, "EXEC") != REDIS_OK) {
    sl_redis_drop(r); /* a half-queued transaction must not be sent */
    return sl_redis_oom(err);
  }
  return sl_redis_exec(r, 2, "MULTI ZADD SET latest EXEC", lost, err);
}

typedef struct {
  uint64_t *ids;
  size_t n;
} sl_redis_ids_t;

/* PREFIX:ckpts newest first, skipping members that are not ids. */
static int sl_redis_op_list(sl_store_redis_t *r, void *arg, int *lost,
                            char **err) {
  sl_redis_ids_t *out = arg;
  char idx[SL_REDIS_KEY_MAX];
  sl_redis_key(r, idx, "ckpts");
  redisReply *rep = sl_redis_check(
      r, redisCommand(r->c, "ZREVRANGE %s 0 -1", idx), "ZREVRANGE", lost, err);
  if (!rep)
    return -1;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY) {
    rc = sl_store_errf(err, "redis at %s: ZREVRANGE %s: not an array", r->where,
                       idx);
  } else if (rep->elements) {
    out->ids = malloc(rep->elements * sizeof(*out->ids));
    if (!out->ids)
      rc = sl_redis_oom(err);
    for (size_t i = 0; out->ids && i < rep->elements; i++) {
      redisReply *e = rep->element[i];
      uint64_t id =
          e->type == REDIS_REPLY_STRING ? sl_store_parse_id(e->str, e->len) : 0;
      if (id)
        out->ids[out->n++] = id;
    }
  }
  freeReplyObject(rep);
  if (rc == 0) /* scores are doubles: above 2^53 only the members are exact */
    sl_store_sort_ids(out->ids, out->n);
  return rc;
}

/* Drops every id beyond the newest `keep`, never `latest`; logs failures. */
static void sl_redis_prune(sl_store_redis_t *r, uint64_t latest) {
  sl_redis_ids_t all = {NULL, 0};
  char *err = NULL, idx[SL_REDIS_KEY_MAX], img[SL_REDIS_KEY_MAX];
  int lost = 0;
  sl_redis_key(r, idx, "ckpts");
  if (!r->c || sl_redis_op_list(r, &all, &lost, &err) != 0)
    goto done;
  for (size_t i = (size_t)r->base.keep; i < all.n && r->c; i++) {
    if (all.ids[i] == latest)
      continue;
    sl_redis_image_key(r, img, all.ids[i]);
    if (redisAppendCommand(r->c, "MULTI") != REDIS_OK ||
        redisAppendCommand(r->c, "DEL %s", img) != REDIS_OK ||
        redisAppendCommand(r->c, "ZREM %s %" PRIu64, idx, all.ids[i]) !=
            REDIS_OK ||
        redisAppendCommand(r->c, "EXEC") != REDIS_OK) {
      sl_redis_drop(r); /* a half-queued transaction must not be sent */
      sl_redis_oom(&err);
      break;
    }
    if (sl_redis_exec(r, 2, "prune (MULTI DEL ZREM EXEC)", &lost, &err) != 0)
      break;
  }
done:
  if (err)
    sl_log(SL_LOG_WARN, "checkpoint", "prune: %s", err);
  free(err);
  free(all.ids);
}

static int sl_redis_commit(sl_store_t *s, uint64_t id, const void *data,
                           size_t len, char **err) {
  sl_store_redis_t *r = (sl_store_redis_t *)s;
  sl_redis_put_t p = {id, data ? data : "", len};
  if (sl_redis_run(r, sl_redis_op_commit, &p, err) != 0)
    return -1;
  sl_redis_prune(r, id);
  return 0;
}

static int sl_redis_op_latest(sl_store_redis_t *r, void *arg, int *lost,
                              char **err) {
  uint64_t *id = arg;
  char lat[SL_REDIS_KEY_MAX];
  sl_redis_key(r, lat, "latest");
  redisReply *rep =
      sl_redis_check(r, redisCommand(r->c, "GET %s", lat), "GET", lost, err);
  if (!rep)
    return -1;
  if (rep->type == REDIS_REPLY_STRING) {
    *id = sl_store_parse_id(rep->str, rep->len);
    if (*id == 0)
      sl_store_errf(err, "redis at %s: %s: not a checkpoint id", r->where, lat);
  } else if (rep->type != REDIS_REPLY_NIL) {
    sl_store_errf(err, "redis at %s: %s: not a string", r->where, lat);
  }
  freeReplyObject(rep);
  return 0; /* missing: 0; garbage: *id = 0 and *err says why */
}

static int sl_redis_latest(sl_store_t *s, uint64_t *id, char **err) {
  return sl_redis_run((sl_store_redis_t *)s, sl_redis_op_latest, id, err);
}

static int sl_redis_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err) {
  sl_redis_ids_t out = {NULL, 0};
  int rc = sl_redis_run((sl_store_redis_t *)s, sl_redis_op_list, &out, err);
  if (rc != 0) {
    free(out.ids);
    return -1;
  }
  *ids = out.ids;
  *n = out.n;
  return 0;
}

typedef struct {
  uint64_t id;
  uint8_t *data;
  size_t len;
} sl_redis_get_t;

static int sl_redis_op_read(sl_store_redis_t *r, void *arg, int *lost,
                            char **err) {
  sl_redis_get_t *g = arg;
  char img[SL_REDIS_KEY_MAX];
  sl_redis_image_key(r, img, g->id);
  redisReply *rep =
      sl_redis_check(r, redisCommand(r->c, "GET %s", img), "GET", lost, err);
  if (!rep)
    return -1;
  int rc = 0;
  if (rep->type == REDIS_REPLY_NIL)
    rc = sl_store_errf(err, "checkpoint %" PRIu64 ": no %s in redis at %s",
                       g->id, img, r->where);
  else if (rep->type != REDIS_REPLY_STRING)
    rc = sl_store_errf(err, "redis at %s: %s: not a string", r->where, img);
  else if (!(g->data = malloc(rep->len ? rep->len : 1)))
    rc = sl_redis_oom(err);
  else {
    memcpy(g->data, rep->str, rep->len);
    g->len = rep->len;
  }
  freeReplyObject(rep);
  return rc;
}

static int sl_redis_read(sl_store_t *s, uint64_t id, uint8_t **data,
                         size_t *len, char **err) {
  sl_redis_get_t g = {id, NULL, 0};
  if (sl_redis_run((sl_store_redis_t *)s, sl_redis_op_read, &g, err) != 0) {
    free(g.data);
    return -1;
  }
  *data = g.data;
  *len = g.len;
  return 0;
}

/* ---- open / close -----------------------------------------------------------
 */

int sl_store_redis_open(const char *url, int keep, sl_store_t **out,
                        char **err) {
  const char *why = NULL;
  sl_store_redis_t *r = calloc(1, sizeof(*r));
  if (!r)
    return sl_redis_oom(err);
  if (sl_redis_url_parse(url, &r->url, &why) != 0) {
    free(r);
    /* the URL may hold a password: name only the reason */
    return sl_store_errf(err, "checkpoint store: bad redis URL: %s", why);
  }
  snprintf(r->where, sizeof(r->where),
           strchr(r->url.host, ':') ? "[%s]:%d" : "%s:%d", r->url.host,
           r->url.port);
  r->base.vt = &sl_store_redis_vt;
  r->base.keep = keep;
  if (sl_redis_connect(r, err) != 0) {
    free(r);
    return -1;
  }
  *out = &r->base;
  return 0;
}

static void sl_redis_close(sl_store_t *s) {
  sl_store_redis_t *r = (sl_store_redis_t *)s;
  sl_redis_drop(r);
  free(r);
}

static const sl_store_vt_t sl_store_redis_vt = {
    sl_redis_close, sl_redis_commit, sl_redis_latest,
    sl_redis_list,  sl_redis_read,
};
