/* sink_redis_eo.c - the redis sink under exactly_once.
 *
 * Runs on the I/O thread, on a blocking hiredis connection of its own (the
 * sink's sc; sink_redis.c owns the rest of the sink).
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
 * Faults: as for the whole sink (sink_redis.c), with blocking calls: a 1 s
 * connect timeout, 2 s for the handshake, 10 s for a reply (60 s for the
 * commit script); restore and start wait up to 30 s for Redis. While Redis
 * is away, flushes keep the entries (back-pressure past RS_MAX_BYTES) and
 * precommit returns 1 (the core holds the barrier and asks again) instead
 * of blocking: the I/O thread, and so the admin API, stay responsive.
 */
#include "log.h"
#include "sink_redis_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SL_SINK_FINAL_ID UINT64_MAX /* checkpoint.h: SL_CKPT_FINAL */
#define RS_STAGE_AT (1u << 20)
#define RS_CONNECT_TIMEOUT_MS 1000
#define RS_REPLY_TIMEOUT_S 10 /* a reply, on the I/O thread */
#define RS_COMMIT_TIMEOUT_S                                                    \
  60                             /* the commit script's (it replays a whole    \
                                    checkpoint's entries) */
#define RS_HELLO_TIMEOUT_MS 2000 /* AUTH, SELECT, PING after connecting */
#define RS_STATE_VERSION 1

/* ---- the checkpoint state's integers ---- */

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

/* ---- the blocking connection and the commit script ---- */

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
  struct timeval hello = {RS_HELLO_TIMEOUT_MS / 1000,
                          (RS_HELLO_TIMEOUT_MS % 1000) * 1000};
  redisSetTimeout(c, hello); /* a hung Redis accepts, then never answers */
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
  struct timeval rt = {RS_REPLY_TIMEOUT_S, 0};
  redisSetTimeout(c, rt);
  return c;
}

/* Connects with back-off (blocking) for up to 30 s. NULL after an ERROR. */
static redisContext *rs_s_connect_wait(const sl_redis_url_t *u,
                                       const char *name) {
  double start = sl_rsink_now();
  unsigned backoff = RS_BACKOFF_MIN;
  char why[256];
  for (;;) {
    redisContext *c = rs_s_connect(u, why, sizeof why);
    if (c)
      return c;
    if (sl_rsink_now() - start >= RS_GIVE_UP_MS) {
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
                       uint64_t id, const sl_rsink_epoch_t *eps, size_t n,
                       int *io) {
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
  struct timeval long_wait = {RS_COMMIT_TIMEOUT_S, 0};
  struct timeval normal = {RS_REPLY_TIMEOUT_S, 0};
  redisSetTimeout(c, long_wait);
  redisReply *r = redisCommandArgv(c, (int)a, argv, lens);
  redisSetTimeout(c, normal);
  for (size_t i = 0; i < n; i++)
    free((char *)argv[5 + i]);
  if (!r) {
    *io = 1;
    sl_log(SL_LOG_WARN, "sink",
           "'%s': commit of checkpoint %" PRIu64 " did not complete: %s", name,
           id, c->errstr);
  } else if (r->type == REDIS_REPLY_ERROR) {
    *io = sl_rsink_is_transient(r->str);
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

/* ---- staging: the sink's connection, pushes and commits ---- */

static void rs_e_on_timer(uv_timer_t *t);

/* The connection broke (why): drop it; the timer reconnects. */
static void rs_e_lost(sl_rsink_t *l, const char *why) {
  char w[256];
  snprintf(w, sizeof w, "%s", why);
  if (l->sc)
    redisFree(l->sc);
  l->sc = NULL;
  sl_rsink_retry_later(l, w, rs_e_on_timer);
}

/* After a reconnect: did the RPUSH whose reply was lost land? 0 = the
 * pending entries are still to push (or were found applied), -1 failed. */
static int rs_e_reconcile(sl_rsink_t *l) {
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
    sl_rsink_fail(
        l,
        "staged list %s holds %lld entries, expected %" PRIu64
        ": redis lost staged writes; restart from the last checkpoint",
        key, n, l->epoch_count);
    return -1;
  }
  return 0;
}

/* Ensures a connection; blocking when `wait`, else one attempt (the timer
 * retries). 0 connected. */
static int rs_e_ensure(sl_rsink_t *l, int wait) {
  if (l->sc)
    return 0;
  if (l->failed)
    return -1;
  char why[256];
  redisContext *c = wait ? rs_s_connect_wait(&l->url, l->k->cfg->name)
                         : rs_s_connect(&l->url, why, sizeof why);
  if (!c) {
    if (wait)
      sl_rsink_fail(l, "redis at %s:%d unreachable", l->url.host, l->url.port);
    else
      sl_rsink_retry_later(l, why, rs_e_on_timer);
    return -1;
  }
  l->sc = c;
  uv_timer_stop(&l->timer);
  sl_rsink_up(l);
  if (l->run && rs_e_reconcile(l) < 0)
    return -1;
  return 0;
}

/* Pushes the pending entries (one SADD + RPUSH round trip). 0 ok. */
static int rs_e_push(sl_rsink_t *l, int wait) {
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
    sl_rsink_fail(l, "out of memory");
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
      sl_rsink_fail(l, "out of memory");
    else
      rs_e_lost(l, l->sc->errstr);
  } else if (r1->type == REDIS_REPLY_ERROR || r2->type == REDIS_REPLY_ERROR) {
    const char *e = r1->type == REDIS_REPLY_ERROR ? r1->str : r2->str;
    rc = -1;
    if (sl_rsink_is_transient(e))
      rs_e_lost(l, e); /* nothing applied: pushed again after reconnect */
    else
      sl_rsink_fail(l, "cannot stage in redis: %s", e);
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
int sl_rsink_eo_push_all(sl_rsink_t *l) {
  double start = sl_rsink_now();
  while (l->pend_n > 0 && !l->failed) {
    if (rs_e_push(l, 1) == 0)
      break;
    if (!l->failed && sl_rsink_now() - start > 2 * RS_GIVE_UP_MS)
      sl_rsink_fail(l, "cannot stage in redis at %s:%d", l->url.host,
                    l->url.port);
  }
  return l->failed ? -1 : 0;
}

static void rs_e_check_ready(sl_rsink_t *l) {
  if (l->k->busy && l->pend.len < RS_MAX_BYTES / 2)
    sl_sink_ready(l->k);
}

static void rs_e_want_commit(sl_rsink_t *l, uint64_t id) {
  if (!l->has_commit_want || l->commit_want < id)
    l->commit_want = id;
  l->has_commit_want = 1;
}

/* Commits the closed epochs up to id. 0 ok (or deferred to a reconnect),
 * -1 failed (logged). */
static int rs_e_commit(sl_rsink_t *l, uint64_t id, int wait) {
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
  sl_rsink_t *l = t->data;
  if (rs_e_ensure(l, 0) < 0)
    return;
  if (rs_e_push(l, 0) < 0)
    return;
  if (l->has_commit_want && rs_e_commit(l, l->commit_want, 0) < 0)
    sl_rsink_fail(l, "cannot commit checkpoint %" PRIu64, l->commit_want);
  rs_e_check_ready(l);
}

/* ---- what sink_redis.c and the vtable call ---- */

void sl_rsink_eo_flush(sl_rsink_t *l) {
  rs_e_push(l, 0);
  rs_e_check_ready(l);
}

int sl_rsink_eo_write(sl_rsink_t *l, sl_codec_reader_t *r) {
  int rc = sl_rsink_queue(l, r, &l->pend, &l->pend_n, sl_rsink_msgpack);
  if (rc == -2)
    return 0;
  if (l->pend.len >= RS_STAGE_AT && l->sc)
    rs_e_push(l, 0);
  if (l->pend.len > RS_MAX_BYTES)
    l->k->busy = 1;
  return rc;
}

/* exactly_once start: key names, the connection, this run's number. */
int sl_rsink_eo_start(sl_rsink_t *l) {
  const char *name = l->k->cfg->name;
  l->k_marker = sl_rsink_key(l, "marker");
  l->k_runs = sl_rsink_key(l, "runs");
  l->k_lists = sl_rsink_key(l, "lists");
  l->k_staged = sl_rsink_key(l, "staged:");
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

int sl_rsink_eo_precommit(sl_sink_t *k, uint64_t id, sl_buf_t *state) {
  sl_rsink_t *l = k->impl;
  if (!k->cfg->exactly_once)
    return 0;
  if (!l || l->failed) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot precommit checkpoint %" PRIu64,
           k->cfg->name, id);
    return -1;
  }
  /* Redis away (no connection, or the push broke it): put the precommit
   * off rather than block the I/O thread; the core asks again every
   * 100 ms, holding the barrier (back-pressure), while the sink's timer
   * reconnects, or fails the run after connect_timeout (exit 5) */
  if (l->pend_n > 0 && (!l->sc || rs_e_push(l, 0) < 0))
    return l->failed ? -1 : 1;
  if (id == SL_SINK_FINAL_ID)
    id = l->final_id = l->last_id + 1;
  l->last_id = id;
  if (l->n_eps == l->cap_eps) {
    size_t cap = l->cap_eps ? l->cap_eps * 2 : 4;
    sl_rsink_epoch_t *e = realloc(l->eps, cap * sizeof *e);
    if (!e)
      goto oom;
    l->eps = e;
    l->cap_eps = cap;
  }
  l->eps[l->n_eps++] = (sl_rsink_epoch_t){l->epoch, l->run, id, l->epoch_count};
  uint8_t w[8];
  int bad = 0;
  rs_put_u64(w, RS_STATE_VERSION);
  bad |= sl_buf_append(state, w, 8);
  rs_put_u64(w, id);
  bad |= sl_buf_append(state, w, 8);
  rs_put_u64(w, l->n_eps);
  bad |= sl_buf_append(state, w, 8);
  for (size_t i = 0; i < l->n_eps; i++) {
    const sl_rsink_epoch_t *e = &l->eps[i];
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

int sl_rsink_eo_commit(sl_sink_t *k, uint64_t id) {
  sl_rsink_t *l = k->impl;
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

int sl_rsink_eo_restore(sl_sink_t *k, const uint8_t *state, size_t len) {
  const sl_node_cfg_t *c = k->cfg;
  if (!c->exactly_once)
    return 0;
  sl_rsink_t tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.k = k;
  const char *why = NULL;
  const char *url = sl_cfg_str(c, "url");
  if (!url || sl_redis_url_parse(url, &tmp.url, &why) < 0) {
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
  sl_rsink_epoch_t *eps = calloc(n + 1, sizeof *eps);
  char *marker = sl_rsink_key(&tmp, "marker"),
       *lists = sl_rsink_key(&tmp, "lists");
  char *staged = sl_rsink_key(&tmp, "staged:");
  redisContext *rc = NULL;
  int ret = -1;
  if (!eps || !marker || !lists || !staged) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", c->name);
    goto out;
  }
  for (uint64_t i = 0; i < n; i++) {
    const uint8_t *p = state + 24 + 32 * i;
    eps[i] = (sl_rsink_epoch_t){rs_get_u64(p), rs_get_u64(p + 8),
                                rs_get_u64(p + 16), rs_get_u64(p + 24)};
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
