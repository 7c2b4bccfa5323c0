/* test_store_redis.c - the redis:// checkpoint store (store.h,
 * store_redis.c) against the suite's redis-server (port in the file named by
 * SLUICE_REDIS_FILE; CTest's `redis` fixture starts it): round trip, keep=3
 * pruning, latest, list order, a missing id, the key layout in the URL's db,
 * two prefixes isolated in one db, a torn image behind latest, reconnect
 * after CLIENT KILL, and the errors for an unreachable Redis and a wrong
 * password. Keys live under "sltest-<pid>-*" in db 9 and are deleted at the
 * end. Skips (still printing the count) only when SLUICE_REDIS_FILE is
 * unset; with it set, an unreachable Redis fails. Main thread only.
 */
#include "check.h"
#include "ckpt.h"
#include "store.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define DB 9

static int port;
static redisContext *raw; /* a second connection, for checks and faults */

static void image(uint64_t id, uint8_t **img, size_t *len) {
  sl_ckpt_t c;
  char blob[64];
  sl_ckpt_init(&c, id);
  c.time_ms = (double)id * 1000;
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "in", (int64_t)id * 10), 0);
  snprintf(blob, sizeof(blob), "sink-%" PRIu64, id);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", blob, strlen(blob)), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "count", 1, blob, strlen(blob)), 0);
  CHECK_EQ_INT(sl_ckpt_encode(&c, img, len), 0);
  sl_ckpt_free(&c);
}

static void url_of(char *url, size_t cap, const char *prefix) {
  snprintf(url, cap, "redis://127.0.0.1:%d/%d?prefix=sltest-%ld-%s", port, DB,
           (long)getpid(), prefix);
}

static sl_store_t *open_ok(const char *prefix, int keep) {
  char url[256];
  sl_store_t *s = NULL;
  char *err = NULL;
  url_of(url, sizeof(url), prefix);
  if (sl_store_open(url, keep, &s, &err) != 0)
    CHECK_FAIL_("open %s: %s", url, err ? err : "?");
  CHECK(s != NULL && err == NULL);
  return s;
}

static void commit_ok(sl_store_t *s, uint64_t id) {
  uint8_t *img;
  size_t len;
  char *err = NULL;
  image(id, &img, &len);
  if (sl_store_commit(s, id, img, len, &err) != 0)
    CHECK_FAIL_("commit %" PRIu64 ": %s", id, err ? err : "?");
  CHECK(err == NULL);
  free(img);
}

static void check_read(sl_store_t *s, uint64_t id) {
  uint8_t *want, *got = NULL;
  size_t wlen, glen = 0;
  char *err = NULL;
  image(id, &want, &wlen);
  if (sl_store_read(s, id, &got, &glen, &err) != 0)
    CHECK_FAIL_("read %" PRIu64 ": %s", id, err ? err : "?");
  CHECK(err == NULL);
  CHECK_EQ_MEM(got, glen, want, wlen);
  sl_ckpt_t c;
  const char *why = NULL;
  CHECK_EQ_INT(sl_ckpt_decode(got, glen, &c, &why), 0);
  CHECK_EQ_INT(c.id, id);
  sl_ckpt_free(&c);
  free(want);
  free(got);
}

static void check_list(sl_store_t *s, const uint64_t *want, size_t n) {
  uint64_t *ids;
  size_t got;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_list(s, &ids, &got, &err), 0);
  CHECK(err == NULL);
  CHECK_EQ_INT(got, n);
  for (size_t i = 0; i < n && i < got; i++)
    CHECK_EQ_INT(ids[i], want[i]);
  free(ids);
}

static uint64_t latest(sl_store_t *s) {
  uint64_t id = 99;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_latest(s, &id, &err), 0);
  CHECK(err == NULL);
  return id;
}

static redisReply *cmd(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(raw, fmt, ap);
  va_end(ap);
  if (!r)
    CHECK_FAIL_("raw redis: %s", raw->errstr);
  CHECK(r->type != REDIS_REPLY_ERROR);
  return r;
}

/* The raw key PREFIX-for-name:what exists? */
static int exists(const char *name, const char *what) {
  redisReply *r = cmd("EXISTS sltest-%ld-%s:%s", (long)getpid(), name, what);
  int e = (int)r->integer;
  freeReplyObject(r);
  return e;
}

static void test_round_trip(void) {
  sl_store_t *s = open_ok("a", 3);
  CHECK_EQ_INT(latest(s), 0);
  check_list(s, NULL, 0);
  commit_ok(s, 1);
  CHECK_EQ_INT(latest(s), 1);
  check_read(s, 1);
  /* the layout, in db 9 */
  CHECK(exists("a", "chk:1"));
  CHECK(exists("a", "ckpts"));
  CHECK(exists("a", "latest"));
  redisReply *r = cmd("GET sltest-%ld-a:latest", (long)getpid());
  CHECK_EQ_STR(r->str, "1");
  freeReplyObject(r);
  r = cmd("ZSCORE sltest-%ld-a:ckpts 1", (long)getpid());
  CHECK_EQ_STR(r->str, "1");
  freeReplyObject(r);
  /* an empty image round-trips too */
  char *err = NULL;
  uint8_t *got = NULL;
  size_t glen = 7;
  CHECK_EQ_INT(sl_store_commit(s, 2, NULL, 0, &err), 0);
  CHECK_EQ_INT(sl_store_read(s, 2, &got, &glen, &err), 0);
  CHECK_EQ_INT(glen, 0);
  free(got);
  sl_store_close(s);
}

static void test_prune_and_order(void) {
  sl_store_t *s = open_ok("b", 3);
  for (uint64_t id = 1; id <= 7; id++) {
    commit_ok(s, id);
    CHECK_EQ_INT(latest(s), id);
  }
  uint64_t want[] = {7, 6, 5};
  check_list(s, want, 3);
  for (int i = 0; i < 3; i++)
    check_read(s, want[i]);
  for (uint64_t id = 1; id <= 4; id++) {
    char key[32];
    snprintf(key, sizeof(key), "chk:%" PRIu64, id);
    CHECK(!exists("b", key)); /* pruned images are deleted too */
  }
  /* ids sort numerically, not as strings */
  commit_ok(s, 10);
  commit_ok(s, 9);
  CHECK_EQ_INT(latest(s), 9);
  uint64_t want2[] = {10, 9, 7};
  check_list(s, want2, 3);
  /* prune never drops the image latest names: an older id committed after
   * newer ones (a restore from an older checkpoint) stays */
  commit_ok(s, 8);
  CHECK_EQ_INT(latest(s), 8);
  uint64_t want3[] = {10, 9, 8};
  check_list(s, want3, 3);
  commit_ok(s, 3);
  uint64_t want4[] = {10, 9, 8, 3};
  check_list(s, want4, 4);
  check_read(s, 3);
  sl_store_close(s);

  /* reopen: everything is still there */
  s = open_ok("b", 3);
  CHECK_EQ_INT(latest(s), 3);
  check_list(s, want4, 4);
  sl_store_close(s);
}

static void test_missing(void) {
  sl_store_t *s = open_ok("c", 2);
  uint8_t *data = (uint8_t *)"x";
  size_t len = 5;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_read(s, 42, &data, &len, &err), -1);
  CHECK(data == NULL && len == 0);
  CHECK(err && strstr(err, "checkpoint 42") && strstr(err, "chk:42"));
  free(err);
  /* garbage latest: 0 with an error, like the file store */
  freeReplyObject(cmd("SET sltest-%ld-c:latest banana", (long)getpid()));
  uint64_t id = 5;
  err = NULL;
  CHECK_EQ_INT(sl_store_latest(s, &id, &err), 0);
  CHECK_EQ_INT(id, 0);
  CHECK(err && strstr(err, "not a checkpoint id"));
  free(err);
  sl_store_close(s);
}

static void test_prefixes(void) {
  sl_store_t *x = open_ok("x", 2), *y = open_ok("y", 2);
  commit_ok(x, 1);
  commit_ok(x, 2);
  commit_ok(y, 5);
  CHECK_EQ_INT(latest(x), 2);
  CHECK_EQ_INT(latest(y), 5);
  uint64_t wx[] = {2, 1}, wy[] = {5};
  check_list(x, wx, 2);
  check_list(y, wy, 1);
  uint8_t *data = NULL;
  size_t len = 0;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_read(y, 1, &data, &len, &err), -1);
  free(err);
  sl_store_close(x);
  sl_store_close(y);
}

static void test_torn(void) {
  sl_store_t *s = open_ok("t", 3);
  commit_ok(s, 1);
  commit_ok(s, 2);
  uint8_t *img, *got = NULL;
  size_t len, glen = 0;
  char *err = NULL;
  sl_ckpt_t c;
  const char *why = NULL;
  /* garbage behind latest: read succeeds, decode refuses */
  freeReplyObject(cmd("SET sltest-%ld-t:chk:2 %s", (long)getpid(),
                      "not a checkpoint image at all"));
  CHECK_EQ_INT(latest(s), 2);
  CHECK_EQ_INT(sl_store_read(s, 2, &got, &glen, &err), 0);
  CHECK(err == NULL);
  CHECK(sl_ckpt_decode(got, glen, &c, &why) != 0 && why != NULL);
  free(got);
  /* a torn (truncated) image: the same */
  image(2, &img, &len);
  freeReplyObject(
      cmd("SET sltest-%ld-t:chk:2 %b", (long)getpid(), img, len - 3));
  got = NULL;
  CHECK_EQ_INT(sl_store_read(s, 2, &got, &glen, &err), 0);
  CHECK_EQ_INT(glen, len - 3);
  why = NULL;
  CHECK(sl_ckpt_decode(got, glen, &c, &why) != 0 && why != NULL);
  free(got);
  free(img);
  check_read(s, 1); /* the older one is intact */
  sl_store_close(s);
}

/* Kills the store's connection (named sluice-ckpt-<pid>) from raw. */
static int kill_store_connection(void) {
  char name[64];
  int killed = 0;
  snprintf(name, sizeof(name), "name=sluice-ckpt-%ld ", (long)getpid());
  redisReply *r = cmd("CLIENT LIST");
  for (char *line = r->str; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = 0;
    long long id;
    if (strstr(line, name) && sscanf(line, "id=%lld", &id) == 1) {
      redisReply *k = cmd("CLIENT KILL ID %lld", id);
      killed += (int)k->integer;
      freeReplyObject(k);
    }
    line = nl ? nl + 1 : NULL;
  }
  freeReplyObject(r);
  return killed;
}

static void test_reconnect(void) {
  sl_store_t *s = open_ok("r", 3);
  commit_ok(s, 1);
  CHECK_EQ_INT(kill_store_connection(), 1);
  commit_ok(s, 2); /* reconnects */
  CHECK_EQ_INT(latest(s), 2);
  CHECK_EQ_INT(kill_store_connection(), 1);
  CHECK_EQ_INT(latest(s), 2);
  CHECK_EQ_INT(kill_store_connection(), 1);
  uint64_t want[] = {2, 1};
  check_list(s, want, 2);
  CHECK_EQ_INT(kill_store_connection(), 1);
  check_read(s, 1);
  /* still in the right db after reconnecting */
  CHECK(exists("r", "chk:2"));
  sl_store_close(s);
}

static void test_errors(void) {
  sl_store_t *s = NULL;
  char *err = NULL, url[256];
  /* nothing listens on port 1 */
  CHECK_EQ_INT(sl_store_open("redis://127.0.0.1:1/0", 3, &s, &err), -1);
  CHECK(s == NULL);
  CHECK(err && strstr(err, "cannot reach redis at 127.0.0.1:1: "));
  free(err);
  err = NULL;
  /* a bad URL names the reason, never the password */
  CHECK_EQ_INT(sl_store_open("redis://:s3cret@h:99999", 3, &s, &err), -1);
  CHECK(err && strstr(err, "port") && !strstr(err, "s3cret"));
  free(err);
  err = NULL;
  /* a password this server does not have */
  snprintf(url, sizeof(url), "redis://:s3cret@127.0.0.1:%d/0", port);
  CHECK_EQ_INT(sl_store_open(url, 3, &s, &err), -1);
  CHECK(err && strstr(err, "AUTH") && !strstr(err, "s3cret"));
  free(err);
  err = NULL;
  /* a db this server does not have */
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d/100000", port);
  CHECK_EQ_INT(sl_store_open(url, 3, &s, &err), -1);
  CHECK(err && strstr(err, "SELECT"));
  free(err);
}

static void cleanup(void) {
  redisReply *r =
      cmd("KEYS sltest-%ld-*", (long)getpid()); /* a test db: KEYS is fine */
  for (size_t i = 0; i < r->elements; i++)
    freeReplyObject(cmd("DEL %s", r->element[i]->str));
  freeReplyObject(r);
}

int main(void) {
  const char *file = getenv("SLUICE_REDIS_FILE");
  if (!file || !*file) {
    printf("skipped: SLUICE_REDIS_FILE is unset (run under ctest)\n");
    return CHECK_DONE();
  }
  FILE *f = fopen(file, "r");
  if (!f || fscanf(f, "%d", &port) != 1)
    CHECK_FAIL_("cannot read a port from %s", file);
  fclose(f);
  signal(SIGPIPE, SIG_IGN); /* as main.c does */
  struct timeval tv = {2, 0};
  raw = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!raw || raw->err)
    CHECK_FAIL_("cannot reach redis at 127.0.0.1:%d: %s", port,
                raw ? raw->errstr : "out of memory");
  freeReplyObject(cmd("SELECT %d", DB));
  cleanup();

  test_round_trip();
  test_prune_and_order();
  test_missing();
  test_prefixes();
  test_torn();
  test_reconnect();
  test_errors();

  cleanup();
  redisFree(raw);
  return CHECK_DONE();
}
