/* test_sink_redis.c - the redis sink (server/sink_redis.c) against a real
 * redis-server (the CTest fixture's: SLUICE_REDIS_FILE holds its port).
 *
 * The sink is made by hand (vtable, cfg, a uv loop, and a stand-in for the
 * core's per-sink state so that sl_sink_ready can wake it) and fed batches
 * of keyed records encoded by LuaJIT's string.buffer ({v1, k1, t1, ...})
 * through a lua_State. Cases:
 *   - at_least_once: 12000 HSETs (past the 10000 outstanding limit, so the
 *     sink goes busy and ready again), plus xadd / set / publish shapes;
 *   - exactly_once (hset): staged, nothing visible; precommit 1 + commit 1
 *     publish exactly checkpoint 1; more records + precommit 2 then a crash
 *     (no commit) + restore(state 1): the hash as of 1, no staged list
 *     left; precommit 2 again then restore(state 2) finishes the interrupted
 *     commit; restoring state 2 again changes nothing (marker);
 *   - exactly_once (xadd, where a duplicate shows): commit applies once,
 *     restore of a committed state applies nothing, restore(NULL) drops the
 *     marker and the staged lists but keeps the user's keys.
 * Keys are under "sluice:t<pid>..." so runs do not collide.
 */
#include "check.h"
#include "codec.h"
#include "core.h"
#include "endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uv_loop_t loop;
static lua_State *L;
static redisContext *rc; /* the test's own view of Redis */
static sl_node_cfg_t cfg;
static char url[128], pipe_name[64];
static int finished, closed;

/* sink.c's per-sink state starts with the core pointer: a stand-in */
static sl_core_t fake_core;
static struct {
  sl_core_t *c;
  int gid, started, finishing;
} fake_kc = {&fake_core, 0, 1, 0};

/* ---- helpers ---- */

static void on_finished(sl_sink_t *k) {
  (void)k;
  finished++;
}

static void on_closed(sl_sink_t *k) {
  (void)k;
  closed++;
}

static void sink_init(sl_sink_t *k) {
  memset(k, 0, sizeof *k);
  k->vt = &sl_sink_redis_vt;
  k->cfg = &cfg;
  k->loop = &loop;
  k->core = &fake_kc;
}

static void sink_start(sl_sink_t *k) {
  sink_init(k);
  CHECK_EQ_INT(k->vt->start(k), 0);
}

static void sink_finish_close(sl_sink_t *k, int finish) {
  if (finish) {
    int before = finished;
    k->vt->finish(k, on_finished);
    while (finished == before)
      uv_run(&loop, UV_RUN_ONCE);
  }
  int before = closed;
  k->vt->close(k, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(closed, before + 1);
}

/* One batch via string.buffer: records "key=value" separated by '|'; a
 * record without '=' has a nil key. */
static void sink_write(sl_sink_t *k, const char *recs) {
  lua_getglobal(L, "mkbatch");
  lua_pushstring(L, recs);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    CHECK(0);
  }
  size_t len;
  const char *b = lua_tolstring(L, -1, &len);
  while (k->busy)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK_EQ_INT(k->vt->write(k, (const uint8_t *)b, len), 0);
  lua_pop(L, 1);
}

static redisReply *cmd(const char *fmt, const char *a, const char *b) {
  redisReply *r = redisCommand(rc, fmt, a, b);
  CHECK(r != NULL);
  return r;
}

static long long cmd_int(const char *fmt, const char *a, const char *b) {
  redisReply *r = cmd(fmt, a, b);
  CHECK_EQ_INT(r->type, REDIS_REPLY_INTEGER);
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

/* HGETALL key as "f=v,f=v" sorted by field (static buffer). */
static const char *hash_of(const char *key) {
  static char out[4096];
  redisReply *r = cmd("HGETALL %s", key, NULL);
  char *items[64];
  size_t n = r->elements / 2;
  CHECK(n < 64);
  for (size_t i = 0; i < n; i++) {
    items[i] = malloc(256);
    snprintf(items[i], 256, "%s=%s", r->element[2 * i]->str,
             r->element[2 * i + 1]->str);
  }
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (strcmp(items[j], items[i]) < 0) {
        char *t = items[i];
        items[i] = items[j];
        items[j] = t;
      }
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i)
      strcat(out, ",");
    strcat(out, items[i]);
    free(items[i]);
  }
  freeReplyObject(r);
  return out;
}

static const char *get_str(const char *key) {
  static char out[256];
  redisReply *r = cmd("GET %s", key, NULL);
  snprintf(out, sizeof out, "%s",
           r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
  freeReplyObject(r);
  return out;
}

/* Number of keys matching pattern. */
static long count_keys(const char *pattern) {
  redisReply *r = cmd("KEYS %s", pattern, NULL);
  long n = (long)r->elements;
  freeReplyObject(r);
  return n;
}

static void restore(sl_sink_t *k, const sl_buf_t *state) {
  sink_init(k);
  cfg.exactly_once = 1;
  int rc = state ? k->vt->restore(k, state->data, state->len)
                 : k->vt->restore(k, NULL, 0);
  CHECK_EQ_INT(rc, 0);
}

static void precommit(sl_sink_t *k, uint64_t id, sl_buf_t *state) {
  state->len = 0;
  CHECK_EQ_INT(k->vt->precommit(k, id, state), 0);
  CHECK(state->len >= 24 && (state->len - 24) % 32 == 0);
}

/* ---- the cases ---- */

static void test_at_least_once(void) {
  char key[128], rec[32];
  sl_sink_t k;
  snprintf(key, sizeof key, "%s:counts", pipe_name);
  cfg.exactly_once = 0;
  sl_cfg_set_str(&cfg, "command", "hset");
  sl_cfg_set_str(&cfg, "key", key);
  sink_start(&k);
  sl_buf_t recs;
  sl_buf_init(&recs);
  int went_busy = 0;
  for (int b = 0; b < 12; b++) {
    recs.len = 0;
    for (int i = 0; i < 1000; i++) {
      int n = snprintf(rec, sizeof rec, "%sk%d=v%d", i ? "|" : "", b * 1000 + i,
                       b * 1000 + i);
      CHECK_EQ_INT(sl_buf_append(&recs, rec, (size_t)n), 0);
    }
    CHECK_EQ_INT(sl_buf_append(&recs, "", 1), 0);
    sink_write(&k, (const char *)recs.data);
    went_busy |= k.busy;
  }
  CHECK(went_busy); /* 12000 > 10000 unanswered: back-pressure */
  sink_finish_close(&k, 1);
  CHECK_EQ_INT(cmd_int("HLEN %s", key, NULL), 12000);
  redisReply *r = cmd("HGET %s %s", key, "k11999");
  CHECK_EQ_STR(r->str, "v11999");
  freeReplyObject(r);
  sl_buf_free(&recs);

  /* xadd: v, and k when there is a key; set with {key}; publish */
  char skey[128];
  snprintf(skey, sizeof skey, "%s:stream", pipe_name);
  sl_cfg_set_str(&cfg, "command", "xadd");
  sl_cfg_set_str(&cfg, "key", skey);
  sink_start(&k);
  sink_write(&k, "a=1|nokey");
  sink_finish_close(&k, 1);
  r = cmd("XRANGE %s - +", skey, NULL);
  CHECK_EQ_INT(r->elements, 2);
  redisReply *f0 = r->element[0]->element[1], *f1 = r->element[1]->element[1];
  CHECK_EQ_INT(f0->elements, 4);
  CHECK_EQ_STR(f0->element[0]->str, "v");
  CHECK_EQ_STR(f0->element[1]->str, "1");
  CHECK_EQ_STR(f0->element[2]->str, "k");
  CHECK_EQ_STR(f0->element[3]->str, "a");
  CHECK_EQ_INT(f1->elements, 2);
  CHECK_EQ_STR(f1->element[1]->str, "nokey");
  freeReplyObject(r);

  snprintf(skey, sizeof skey, "%s:set:{key}", pipe_name);
  sl_cfg_set_str(&cfg, "key", skey); /* the setting is a copy */
  sl_cfg_set_str(&cfg, "command", "set");
  sink_start(&k);
  sink_write(&k, "x=1|y=2|x=3");
  sink_finish_close(&k, 1);
  snprintf(skey, sizeof skey, "%s:set:x", pipe_name);
  CHECK_EQ_STR(get_str(skey), "3");
  snprintf(skey, sizeof skey, "%s:set:y", pipe_name);
  CHECK_EQ_STR(get_str(skey), "2");

  snprintf(skey, sizeof skey, "%s:chan", pipe_name);
  sl_cfg_set_str(&cfg, "key", skey); /* the setting is a copy */
  sl_cfg_set_str(&cfg, "command", "publish");
  sink_start(&k);
  sink_write(&k, "x=hello");
  sink_finish_close(&k, 1);
  CHECK_EQ_INT(k.errors, 0);

  /* an error reply is counted, not fatal: HSET on a string key */
  snprintf(skey, sizeof skey, "%s:set:x", pipe_name);
  sl_cfg_set_str(&cfg, "key", skey); /* the setting is a copy */
  sl_cfg_set_str(&cfg, "command", "hset");
  sink_start(&k);
  sink_write(&k, "f=1");
  sink_finish_close(&k, 1);
  CHECK_EQ_INT(k.errors, 1);
}

static void test_exactly_once_hset(void) {
  char key[128], marker[160], lists[160], staged[160];
  sl_sink_t k;
  sl_buf_t s1, s2;
  sl_buf_init(&s1);
  sl_buf_init(&s2);
  cfg.name = "out";
  snprintf(key, sizeof key, "%s:eo", pipe_name);
  snprintf(marker, sizeof marker, "sluice:%s:out:marker", pipe_name);
  snprintf(lists, sizeof lists, "sluice:%s:out:lists", pipe_name);
  snprintf(staged, sizeof staged, "sluice:%s:out:staged:*", pipe_name);
  sl_cfg_set_str(&cfg, "command", "hset");
  sl_cfg_set_str(&cfg, "key", key);

  restore(&k, NULL);
  sink_start(&k);
  sink_write(&k, "k1=a1|k2=a2");
  k.vt->flush(&k);
  CHECK_EQ_STR(hash_of(key), ""); /* staged, not applied */
  CHECK_EQ_INT(count_keys(staged), 1);
  precommit(&k, 1, &s1);
  CHECK_EQ_INT(s1.len, 24 + 32);
  CHECK_EQ_STR(hash_of(key), "");
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_STR(hash_of(key), "k1=a1,k2=a2");
  CHECK_EQ_STR(get_str(marker), "1");
  CHECK_EQ_INT(count_keys(staged), 0);

  /* checkpoint 2 precommitted, then a crash before its commit */
  sink_write(&k, "k2=b2|k3=b3");
  precommit(&k, 2, &s2);
  CHECK_EQ_INT(count_keys(staged), 1);
  sink_finish_close(&k, 0);
  restore(&k, &s1);
  CHECK_EQ_STR(hash_of(key), "k1=a1,k2=a2");
  CHECK_EQ_STR(get_str(marker), "1");
  CHECK_EQ_INT(count_keys(staged), 0);
  CHECK_EQ_INT(cmd_int("EXISTS %s", lists, NULL), 0);

  /* the sources replay; 2 is precommitted and the checkpoint stored, but
   * the process dies before commit: restore(2) completes it */
  sink_start(&k);
  sink_write(&k, "k2=b2");
  precommit(&k, 2, &s2);
  sink_write(&k, "k3=b3"); /* after 2: dropped by the restore */
  k.vt->flush(&k);
  sink_finish_close(&k, 0);
  restore(&k, &s2);
  CHECK_EQ_STR(hash_of(key), "k1=a1,k2=b2");
  CHECK_EQ_STR(get_str(marker), "2");
  CHECK_EQ_INT(count_keys(staged), 0);
  /* applied once: a second restore of 2 changes nothing */
  redisReply *r = cmd("HSET %s k2 %s", key, "manual");
  freeReplyObject(r);
  restore(&k, &s2);
  CHECK_EQ_STR(hash_of(key), "k1=a1,k2=manual");

  /* restoring an older checkpoint lowers the marker */
  restore(&k, &s1);
  CHECK_EQ_STR(get_str(marker), "1");
  sl_buf_free(&s1);
  sl_buf_free(&s2);
}

static void test_exactly_once_xadd(void) {
  char key[128], marker[160], staged[160];
  sl_sink_t k;
  sl_buf_t s1, s2, s3;
  sl_buf_init(&s1);
  sl_buf_init(&s2);
  sl_buf_init(&s3);
  cfg.name = "log";
  snprintf(key, sizeof key, "%s:log", pipe_name);
  snprintf(marker, sizeof marker, "sluice:%s:log:marker", pipe_name);
  snprintf(staged, sizeof staged, "sluice:%s:log:staged:*", pipe_name);
  sl_cfg_set_str(&cfg, "command", "xadd");
  sl_cfg_set_str(&cfg, "key", key);

  restore(&k, NULL);
  sink_start(&k);
  sink_write(&k, "a=1|b=2|3");
  precommit(&k, 1, &s1);
  sink_write(&k, "c=4");
  precommit(&k, 2, &s2); /* 2 precommitted before 1 commits */
  CHECK_EQ_INT(s2.len, 24 + 2 * 32);
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_INT(cmd_int("XLEN %s", key, NULL), 3);
  CHECK_EQ_INT(k.vt->commit(&k, 1), -1); /* not precommitted any more */
  CHECK_EQ_INT(k.vt->commit(&k, 2), 0);
  CHECK_EQ_INT(cmd_int("XLEN %s", key, NULL), 4);
  /* a checkpoint whose epoch is empty */
  precommit(&k, 3, &s3);
  CHECK_EQ_INT(k.vt->commit(&k, 3), 0);
  CHECK_EQ_STR(get_str(marker), "3");
  /* 4 and 5 precommitted, 5 commits (and with it 4) */
  sink_write(&k, "d=5");
  precommit(&k, 4, &s3);
  sink_write(&k, "e=6|f=7");
  precommit(&k, 5, &s3);
  CHECK_EQ_INT(k.vt->commit(&k, 5), 0);
  CHECK_EQ_INT(cmd_int("XLEN %s", key, NULL), 7);
  sink_finish_close(&k, 1);
  /* the commit script run again for 5 (a restart): applies nothing */
  restore(&k, &s3);
  CHECK_EQ_INT(cmd_int("XLEN %s", key, NULL), 7);
  CHECK_EQ_STR(get_str(marker), "5");
  /* a fresh start: marker and staged lists go, user data stays */
  sink_start(&k);
  sink_write(&k, "g=8");
  k.vt->flush(&k);
  sink_finish_close(&k, 0);
  CHECK_EQ_INT(count_keys(staged), 1);
  restore(&k, NULL);
  CHECK_EQ_STR(get_str(marker), "(nil)");
  CHECK_EQ_INT(count_keys(staged), 0);
  CHECK_EQ_INT(cmd_int("XLEN %s", key, NULL), 7);
  sl_buf_free(&s1);
  sl_buf_free(&s2);
  sl_buf_free(&s3);
}

/* ---- a redis-server of our own, for the restart cases ---- */

static pid_t own_pid;
static int own_port;
static char own_dir[128];

static void own_start(int aof) {
  char port[16];
  snprintf(port, sizeof port, "%d", own_port);
  own_pid = fork();
  CHECK(own_pid >= 0);
  if (own_pid == 0) {
    int dn = open("/dev/null", O_WRONLY);
    dup2(dn, 1);
    dup2(dn, 2);
    execlp("redis-server", "redis-server", "--port", port, "--bind",
           "127.0.0.1", "--save", "", "--appendonly", aof ? "yes" : "no",
           "--appendfsync", "always", "--dir", own_dir, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100; i++) {
    redisContext *c = redisConnect("127.0.0.1", own_port);
    redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
      freeReplyObject(r);
    if (c)
      redisFree(c);
    if (ok)
      return;
    usleep(20000);
  }
  CHECK(0); /* did not come up */
}

/* A loopback port nobody listens on (the kernel's pick). */
static int free_port(void) {
  struct sockaddr_in sa;
  socklen_t n = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &n) == 0);
  close(fd);
  return ntohs(sa.sin_port);
}

static void own_kill(void) {
  if (own_pid > 0) {
    kill(own_pid, SIGKILL);
    waitpid(own_pid, NULL, 0);
  }
  own_pid = 0;
}

/* At exit, even a failing CHECK's: no redis-server or folder left over. */
static void own_cleanup(void) {
  own_kill();
  if (own_dir[0]) {
    char rm[200];
    snprintf(rm, sizeof rm, "rm -rf %s", own_dir);
    if (system(rm) != 0)
      fprintf(stderr, "cannot remove %s\n", own_dir);
  }
}

/* Runs the loop for ms milliseconds. */
static void spin(int ms) {
  double end = (double)uv_hrtime() / 1e6 + ms;
  while ((double)uv_hrtime() / 1e6 < end) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static long long own_int(const char *fmt, const char *a) {
  redisContext *c = redisConnect("127.0.0.1", own_port);
  CHECK(c && !c->err);
  redisReply *r = redisCommand(c, fmt, a);
  CHECK(r && r->type == REDIS_REPLY_INTEGER);
  long long v = r->integer;
  freeReplyObject(r);
  redisFree(c);
  return v;
}

/* Redis down at start, then killed mid-run (no persistence): the sink
 * retries, reconnects and sends what was not answered. */
static void test_restart_at_least_once(void) {
  char own_url[64];
  sl_sink_t k;
  snprintf(own_url, sizeof own_url, "redis://127.0.0.1:%d", own_port);
  sl_cfg_set_str(&cfg, "url", own_url);
  cfg.exactly_once = 0;
  sl_cfg_set_str(&cfg, "command", "hset");
  sl_cfg_set_str(&cfg, "key", "h");
  cfg.name = "out";
  sink_start(&k);
  sink_write(&k, "a=1|b=2");
  spin(350); /* a few refused connects, WARNs */
  own_start(0);
  spin(2100); /* the back-off is at most 2 s */
  CHECK_EQ_INT(own_int("HLEN %s", "h"), 2);
  own_kill();
  sink_write(&k, "c=3|d=4");
  spin(100);
  own_start(0); /* empty: a and b are gone with it */
  sink_finish_close(&k, 1);
  CHECK_EQ_INT(own_int("HLEN %s", "h"), 2);
  CHECK_EQ_INT(own_int("HEXISTS h %s", "d"), 1);
  own_kill();
}

/* exactly_once across a Redis restart (AOF, fsync always): staged entries
 * survive, the sink reconnects, checks LLEN and commits each entry once. */
static void test_restart_exactly_once(void) {
  char own_url[64];
  sl_sink_t k;
  sl_buf_t s1;
  sl_buf_init(&s1);
  snprintf(own_url, sizeof own_url, "redis://127.0.0.1:%d", own_port);
  sl_cfg_set_str(&cfg, "url", own_url);
  sl_cfg_set_str(&cfg, "command", "xadd");
  sl_cfg_set_str(&cfg, "key", "s");
  cfg.name = "eo";
  own_start(1);
  restore(&k, NULL);
  sink_start(&k);
  sink_write(&k, "a=1|b=2");
  k.vt->flush(&k); /* staged */
  own_kill();
  own_start(1);
  sink_write(&k, "c=3");
  k.vt->flush(&k); /* the push fails: reconnects from the timer */
  spin(500);
  precommit(&k, 1, &s1);
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_INT(own_int("XLEN %s", "s"), 3);
  sink_finish_close(&k, 0);
  own_kill();
  sl_buf_free(&s1);
}

int main(void) {
  const char *pf = getenv("SLUICE_REDIS_FILE");
  FILE *f = pf ? fopen(pf, "r") : NULL;
  int port = 0;
  if (!f || fscanf(f, "%d", &port) != 1) {
    printf("no redis-server (SLUICE_REDIS_FILE): skipped\n");
    return 0;
  }
  fclose(f);
  rc = redisConnect("127.0.0.1", port);
  CHECK(rc != NULL && rc->err == 0);
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
  snprintf(pipe_name, sizeof pipe_name, "t%d", (int)getpid());
  cfg.name = "out";
  cfg.kind = "redis";
  sl_cfg_set_str(&cfg, "url", url);
  sl_cfg_set_str(&cfg, "pipeline", pipe_name);

  uv_loop_init(&loop);
  uv_async_init(&loop, &fake_core.wake, NULL);
  uv_unref((uv_handle_t *)&fake_core.wake);
  L = luaL_newstate();
  luaL_openlibs(L);
  const char *mk =
      "local buffer = require('string.buffer')\n"
      "local tnew = require('table.new')\n"
      "function mkbatch(s)\n"
      "  local recs = {}\n"
      "  for rec in s:gmatch('[^|]+') do recs[#recs + 1] = rec end\n"
      "  local t, n = tnew(3 * #recs, 0), 0\n"
      "  for _, rec in ipairs(recs) do\n"
      "    local k, v = rec:match('^([^=]*)=(.*)$')\n"
      "    if not k then v = rec end\n"
      "    t[n + 1], t[n + 2], t[n + 3] = v, k, 1000\n"
      "    n = n + 3\n"
      "  end\n"
      "  return buffer.encode(t)\n"
      "end\n";
  CHECK_EQ_INT(luaL_dostring(L, mk), 0);

  test_at_least_once();
  test_exactly_once_hset();
  test_exactly_once_xadd();

  snprintf(own_dir, sizeof own_dir, "/tmp/sluice-test-redis-%d", (int)getpid());
  CHECK_EQ_INT(mkdir(own_dir, 0700), 0);
  atexit(own_cleanup);
  own_port = free_port();
  test_restart_at_least_once();
  test_restart_exactly_once();

  /* leave nothing behind in the shared redis-server */
  redisReply *r = redisCommand(rc, "KEYS *%s*", pipe_name);
  for (size_t i = 0; r && i < r->elements; i++)
    freeReplyObject(redisCommand(rc, "DEL %s", r->element[i]->str));
  freeReplyObject(r);
  redisFree(rc);
  lua_close(L);
  uv_close((uv_handle_t *)&fake_core.wake, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  return CHECK_DONE();
}
