/* test_source_redis.c - the `redis` source (server/source_redis.c) against
 * a real redis-server: the suite's (SLUICE_REDIS_FILE holds its port on
 * 127.0.0.1; CTest's `redis` fixture starts it), or, when that is unset, one
 * this test starts itself on a free loopback port and kills by PID.
 *
 * The source runs on a real uv loop. The core's side of sources (source.c)
 * is replaced by the fakes below, which record what is emitted and can pause
 * the source after a given number of records (as back-pressure would);
 * source.c is not linked in. CMakeLists.txt builds source_redis.c into this
 * test with SL_REDIS_CONNECT_TIMEOUT_MS=1500, so the give-up path is tested
 * in seconds; everything else is the code the server runs.
 *
 * Covers: 1000+ entries read in order with their times; an entry without
 * the field rejected; field = "*" (or NULL) emits whole entries as field
 * tables (sl_source_emit_fields); pause holds the next read and resume sends
 * it; position, and committed XACKs (XPENDING drops, over more than one
 * XPENDING round of 1000); seek_position re-reads the pending entries after
 * the position and acknowledges those up to it; a restart without a
 * position re-reads every pending entry; start = "first" vs "last"; a
 * connection killed (CLIENT KILL TYPE normal) mid-stream loses and
 * duplicates nothing; Redis unreachable at start: retried until it comes
 * up; unreachable for good: sl_source_fail.
 */
#include "check.h"
#include "endpoint.h"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uv_loop_t loop;
static redisContext *rc; /* the test's own synchronous connection */
static int port;
static char url[64];
static char prefix[32]; /* makes this run's keys unique */

/* ---- fakes of the core's source calls ---- */

#define MAX_REC 8192
static char *vals[MAX_REC];
static double times[MAX_REC];
static long emitted, pause_after = -1, ends, rejects, fails;

int sl_source_emit(sl_source_t *s, const char *line, size_t n, double t) {
  if (emitted < MAX_REC) {
    vals[emitted] = strndup(line, n);
    CHECK(vals[emitted] != NULL);
    times[emitted] = t;
  }
  if (++emitted == pause_after)
    s->paused = 1;
  return 0;
}

/* A whole entry is recorded as "f1=v1&f2=v2..." in the order given. */
static long emitted_fields; /* of `emitted`, how many came this way */

int sl_source_emit_fields(sl_source_t *s, const char *const *kv,
                          const size_t *lens, size_t npairs, double t) {
  size_t n = 1;
  for (size_t i = 0; i < 2 * npairs; i++)
    n += lens[i] + 1;
  char *text = malloc(n), *p = text;
  CHECK(text != NULL);
  for (size_t i = 0; i < 2 * npairs; i++) {
    if (i)
      *p++ = i % 2 ? '=' : '&';
    memcpy(p, kv[i], lens[i]);
    p += lens[i];
  }
  *p = 0;
  if (emitted < MAX_REC) {
    vals[emitted] = text;
    times[emitted] = t;
  } else {
    free(text);
  }
  emitted_fields++;
  if (++emitted == pause_after)
    s->paused = 1;
  return 0;
}

void sl_source_flush(sl_source_t *s) {
  (void)s;
}

void sl_source_end(sl_source_t *s, int closing) {
  (void)closing;
  s->ended = 1;
  ends++;
}

void sl_source_reject(sl_source_t *s, const char *why) {
  (void)s;
  fprintf(stderr, "  (rejected: %s)\n", why);
  rejects++;
}

void sl_source_fail(sl_source_t *s, const char *why) {
  (void)s;
  fprintf(stderr, "  (failed: %s)\n", why);
  fails++;
}

/* ---- helpers ---- */

static void reset(void) {
  for (long i = 0; i < emitted && i < MAX_REC; i++)
    free(vals[i]);
  emitted = emitted_fields = ends = rejects = fails = 0;
  pause_after = -1;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

/* Runs the loop until cond() holds or ms pass; returns cond(). */
static int run_until(int (*cond)(void), int ms) {
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 5, 5);
  double end = now_ms() + ms;
  while (!(cond && cond()) && now_ms() < end)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return cond ? cond() : 1;
}

static long want;
static int got_want(void) {
  return emitted >= want;
}
static int got_fail(void) {
  return fails > 0;
}
static void run_for(int ms) {
  run_until(NULL, ms);
}

static redisReply *cmd(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (!r)
    CHECK_FAIL_("redis: %s", rc->errstr);
  if (r->type == REDIS_REPLY_ERROR)
    CHECK_FAIL_("redis: %s", r->str);
  return r;
}

static void key(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s:%s", prefix, name);
}

/* XADD n entries "base".."base+n-1" to stream k; ids[i] gets each id. */
static void xadd(const char *k, int base, int n, char (*ids)[48]) {
  for (int i = 0; i < n; i++) {
    redisReply *r = cmd("XADD %s * v %d", k, base + i);
    if (ids)
      snprintf(ids[i], 48, "%s", r->str);
    freeReplyObject(r);
  }
}

static long long pending(const char *k, const char *group) {
  redisReply *r = cmd("XPENDING %s %s", k, group);
  long long n = r->element[0]->integer;
  freeReplyObject(r);
  return n;
}

static long long pend_want;
static const char *pend_key, *pend_group;
static int pend_is(void) {
  return pending(pend_key, pend_group) == pend_want;
}

static void on_closed(sl_source_t *s) {
  (void)s;
}

static void src_init(sl_source_t *s, sl_node_cfg_t *cfg, const char *stream,
                     const char *start) {
  sl_cfg_free(cfg); /* cfg: static, so what it holds stays reachable */
  memset(cfg, 0, sizeof *cfg);
  cfg->name = "rs";
  cfg->kind = "redis";
  sl_cfg_set_str(cfg, "url", url);
  sl_cfg_set_str(cfg, "stream", stream);
  sl_cfg_set_str(cfg, "group", "g");
  sl_cfg_set_str(cfg, "consumer", "c1");
  if (start)
    sl_cfg_set_str(cfg, "start_at", start);
  sl_cfg_set_str(cfg, "field", "v");
  memset(s, 0, sizeof *s);
  s->vt = &sl_source_redis_vt;
  s->cfg = cfg;
  s->loop = &loop;
}

static void src_close(sl_source_t *s) {
  s->ended = 1;
  s->vt->close(s, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
}

static void position(sl_source_t *s, char *out, size_t n) {
  sl_buf_t b;
  sl_buf_init(&b);
  CHECK_EQ_INT(s->vt->position(s, &b), 0);
  snprintf(out, n, "%.*s", (int)b.len, (const char *)b.data);
  sl_buf_free(&b);
}

static void committed(sl_source_t *s, uint64_t id, const char *pos) {
  s->vt->committed(s, id, (const uint8_t *)pos, strlen(pos));
}

/* Values emitted are base..base+n-1, in order. */
static void check_seq(long from, int base, long n) {
  for (long i = 0; i < n; i++) {
    char want_v[24];
    snprintf(want_v, sizeof want_v, "%ld", base + i);
    if (strcmp(vals[from + i], want_v))
      CHECK_FAIL_("record %ld is \"%s\", want \"%s\"", from + i, vals[from + i],
                  want_v);
  }
  sl_check_passed++;
}

/* ---- a redis-server of our own ---- */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

static pid_t running[4]; /* ours, stopped at exit even after a failure */

static void redis_stop_all(void) {
  for (int i = 0; i < 4; i++)
    if (running[i] > 0) {
      kill(running[i], SIGTERM);
      waitpid(running[i], NULL, 0);
      running[i] = 0;
    }
}

static pid_t redis_start(int p) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", p);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1",
           "--save", "", "--appendonly", "no", "--loglevel", "warning",
           (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100; i++) {
    redisContext *c = redisConnect("127.0.0.1", p);
    int ok = c && !c->err;
    redisFree(c);
    if (ok) {
      for (int j = 0; j < 4; j++)
        if (running[j] == 0) {
          running[j] = pid;
          break;
        }
      return pid;
    }
    usleep(50 * 1000);
  }
  CHECK_FAIL_("redis-server did not start on port %d", p);
}

static void redis_stop(pid_t pid) {
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  for (int j = 0; j < 4; j++)
    if (running[j] == pid)
      running[j] = 0;
}

/* ---- the tests ---- */

/* 1000 entries in order, with their times; then one without the field;
 * position; committed over two XPENDING rounds. */
static void test_read_commit(void) {
  char k[64], ids[1000][48], pos[48];
  static sl_node_cfg_t cfg;
  sl_source_t s;
  key(k, sizeof k, "read");
  reset();
  xadd(k, 0, 1000, ids);
  freeReplyObject(cmd("XADD %s * w nov", k));
  src_init(&s, &cfg, k, "first");
  position(&s, pos, sizeof pos);
  CHECK_EQ_STR(pos, "0-0");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  want = 1000;
  CHECK(run_until(got_want, 5000));
  run_for(100);
  CHECK_EQ_INT(emitted, 1000);
  CHECK_EQ_INT(rejects, 1);
  check_seq(0, 0, 1000);
  CHECK_EQ_INT((long long)times[0], strtoll(ids[0], NULL, 10));
  CHECK_EQ_INT((long long)times[999], strtoll(ids[999], NULL, 10));
  /* position: the last entry consumed (the rejected one) */
  redisReply *last = cmd("XREVRANGE %s + - COUNT 1", k);
  position(&s, pos, sizeof pos);
  CHECK_EQ_STR(pos, last->element[0]->element[0]->str);
  freeReplyObject(last);
  CHECK_EQ_INT(pending(k, "g"), 1001);
  /* committed: XACK up to entry 500's id, then everything */
  committed(&s, 1, ids[499]);
  pend_key = k, pend_group = "g", pend_want = 501;
  CHECK(run_until(pend_is, 3000));
  committed(&s, 2, ids[10]); /* older: nothing more */
  committed(&s, 3, pos);
  pend_want = 0;
  CHECK(run_until(pend_is, 3000));
  /* new entries keep coming */
  xadd(k, 1000, 5, NULL);
  want = 1005;
  CHECK(run_until(got_want, 3000));
  check_seq(1000, 1000, 5);
  /* stop ends the source (not closing) and emits no more */
  s.vt->stop(&s);
  CHECK_EQ_INT(ends, 1);
  CHECK(s.ended);
  xadd(k, 2000, 5, NULL);
  run_for(300);
  CHECK_EQ_INT(emitted, 1005);
  /* what the read in flight at stop got (1 to 5 entries) was not emitted
   * and stays pending; the final checkpoint's commit still acknowledges
   * the 5 emitted */
  long long p = pending(k, "g");
  CHECK(p >= 6 && p <= 10);
  position(&s, pos, sizeof pos);
  committed(&s, 4, pos);
  pend_want = p - 5;
  CHECK(run_until(pend_is, 3000));
  src_close(&s);
  reset();
}

/* field = "*" (and NULL): each entry is emitted whole, as its field/value
 * pairs in order (empty values, a field given twice, 40 fields: past the
 * source's stack arrays), with its time. */
static void test_whole_entry(void) {
  static const char *const fields[] = {"*", NULL};
  for (int f = 0; f < 2; f++) {
    char k[64], big[40 * 16], id0[48];
    static sl_node_cfg_t cfg;
    sl_source_t s;
    key(k, sizeof k, f ? "whole-null" : "whole-star");
    reset();
    redisReply *r = cmd("XADD %s * v 1 name %s", k, "hello world");
    snprintf(id0, sizeof id0, "%s", r->str);
    freeReplyObject(r);
    freeReplyObject(cmd("XADD %s * a %s b x", k, ""));
    freeReplyObject(cmd("XADD %s * f 1 f 2", k));
    const char *argv[3 + 80];
    char names[80][8];
    size_t blen = 0;
    argv[0] = "XADD", argv[1] = k, argv[2] = "*";
    for (int i = 0; i < 40; i++) {
      snprintf(names[2 * i], 8, "k%d", i);
      snprintf(names[2 * i + 1], 8, "%d", i * i);
      argv[3 + 2 * i] = names[2 * i];
      argv[4 + 2 * i] = names[2 * i + 1];
      blen += (size_t)snprintf(big + blen, sizeof big - blen, "%s%s=%s",
                               i ? "&" : "", names[2 * i], names[2 * i + 1]);
    }
    r = redisCommandArgv(rc, 83, argv, NULL);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    src_init(&s, &cfg, k, "first");
    /* NULL: no field setting, which means the whole entry, as "*" */
    sl_cfg_set_str(&cfg, "field", fields[f] ? fields[f] : "*");
    CHECK_EQ_INT(s.vt->start(&s), 0);
    want = 4;
    CHECK(run_until(got_want, 5000));
    run_for(100);
    CHECK_EQ_INT(emitted, 4);
    CHECK_EQ_INT(emitted_fields, 4);
    CHECK_EQ_INT(rejects, 0);
    CHECK_EQ_STR(vals[0], "v=1&name=hello world");
    CHECK_EQ_STR(vals[1], "a=&b=x");
    CHECK_EQ_STR(vals[2], "f=1&f=2"); /* the codec keeps the last */
    CHECK_EQ_STR(vals[3], big);
    CHECK_EQ_INT((long long)times[0], strtoll(id0, NULL, 10));
    src_close(&s);
  }
  reset();
}

/* Pause holds the next XREADGROUP; resume sends it. */
static void test_pause(void) {
  char k[64];
  static sl_node_cfg_t cfg;
  sl_source_t s;
  key(k, sizeof k, "pause");
  reset();
  xadd(k, 0, 2000, NULL);
  src_init(&s, &cfg, k, "first");
  pause_after = 600; /* in the second reply of 512 */
  CHECK_EQ_INT(s.vt->start(&s), 0);
  want = 600;
  CHECK(run_until(got_want, 5000));
  run_for(300);
  CHECK_EQ_INT(emitted, 1024); /* that reply is emitted whole, no more */
  CHECK(s.paused);
  s.paused = 0;
  s.vt->resume(&s);
  s.vt->resume(&s); /* idempotent: still one read in flight */
  want = 2000;
  CHECK(run_until(got_want, 5000));
  run_for(100);
  CHECK_EQ_INT(emitted, 2000);
  check_seq(0, 0, 2000);
  src_close(&s);
  reset();
}

/* seek_position: a restored consumer re-reads its pending entries after the
 * position and acknowledges those up to it; a consumer started without a
 * position re-reads all of its pending entries. */
static void test_seek(void) {
  char k[64], ids[100][48];
  static sl_node_cfg_t cfg;
  sl_source_t s;
  key(k, sizeof k, "seek");
  reset();
  xadd(k, 0, 100, ids);
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  want = 100;
  CHECK(run_until(got_want, 5000));
  src_close(&s); /* a crash: nothing acknowledged */
  CHECK_EQ_INT(pending(k, "g"), 100);
  reset();

  /* restart with no position: at-least-once, everything pending again */
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  want = 100;
  CHECK(run_until(got_want, 5000));
  run_for(100);
  CHECK_EQ_INT(emitted, 100);
  check_seq(0, 0, 100);
  src_close(&s);
  reset();

  /* restore the checkpoint that covered entries 0..39 */
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(
      s.vt->seek_position(&s, (const uint8_t *)ids[39], strlen(ids[39])), 0);
  char pos[48];
  position(&s, pos, sizeof pos);
  CHECK_EQ_STR(pos, ids[39]);
  CHECK_EQ_INT(s.vt->start(&s), 0);
  CHECK(s.vt->seek_position(&s, (const uint8_t *)"1-0", 3) < 0);
  want = 60;
  CHECK(run_until(got_want, 5000));
  xadd(k, 100, 10, NULL);
  want = 70;
  CHECK(run_until(got_want, 5000));
  run_for(100);
  CHECK_EQ_INT(emitted, 70);
  check_seq(0, 40, 70);
  CHECK_EQ_INT(pending(k, "g"), 70); /* 0..39 acknowledged at restore */
  src_close(&s);
  reset();

  /* a malformed position is refused */
  src_init(&s, &cfg, k, "first");
  CHECK(s.vt->seek_position(&s, (const uint8_t *)"12-x", 4) < 0);
  src_close(&s);
}

/* start = "first" reads a stream's existing entries, "last" only new ones. */
static void test_start(void) {
  char k1[64], k2[64];
  static sl_node_cfg_t cfg;
  sl_source_t s;
  key(k1, sizeof k1, "first");
  key(k2, sizeof k2, "last");
  reset();
  xadd(k1, 0, 5, NULL);
  xadd(k2, 0, 5, NULL);
  src_init(&s, &cfg, k1, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  want = 5;
  CHECK(run_until(got_want, 3000));
  run_for(100);
  CHECK_EQ_INT(emitted, 5);
  check_seq(0, 0, 5);
  src_close(&s);
  reset();

  src_init(&s, &cfg, k2, NULL); /* default: last */
  CHECK_EQ_INT(s.vt->start(&s), 0);
  run_for(300);
  CHECK_EQ_INT(emitted, 0);
  xadd(k2, 5, 3, NULL);
  want = 3;
  CHECK(run_until(got_want, 3000));
  run_for(100);
  CHECK_EQ_INT(emitted, 3);
  check_seq(0, 5, 3);
  src_close(&s);
  reset();

  /* a stream that does not exist yet is created (MKSTREAM) */
  char k3[64];
  key(k3, sizeof k3, "new");
  src_init(&s, &cfg, k3, "last");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  run_for(200);
  xadd(k3, 0, 2, NULL);
  want = 2;
  CHECK(run_until(got_want, 3000));
  src_close(&s);
  reset();
}

/* The id of the source's connection (named by CLIENT SETNAME; other tests
 * may share this redis-server, so not CLIENT KILL TYPE normal), or -1. */
static long long source_client(void) {
  redisReply *r = cmd("CLIENT LIST");
  const char *line = r->str;
  long long id = -1;
  while (line && *line) {
    const char *nl = strchr(line, '\n');
    size_t n = nl ? (size_t)(nl - line) : strlen(line);
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)(n < 1000 ? n : 1000), line);
    if (strstr(buf, " name=sluice:rs:c1 "))
      id = strtoll(buf + 3, NULL, 10); /* "id=N ..." */
    line = nl ? nl + 1 : NULL;
  }
  freeReplyObject(r);
  return id;
}

static long long client_id;
static int client_up(void) {
  return (client_id = source_client()) >= 0;
}

/* Kills the source's connection once it is up. */
static void kill_source_client(void) {
  CHECK(run_until(client_up, 5000));
  redisReply *r = cmd("CLIENT KILL ID %lld", client_id);
  CHECK_EQ_INT(r->integer, 1);
  freeReplyObject(r);
}

/* CLIENT KILL mid-stream: the source reconnects, reads on; nothing lost or
 * emitted twice. */
static void test_reconnect(void) {
  char k[64];
  static sl_node_cfg_t cfg;
  sl_source_t s;
  key(k, sizeof k, "kill");
  reset();
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  xadd(k, 0, 300, NULL);
  want = 300;
  CHECK(run_until(got_want, 5000));
  for (int round = 0; round < 3; round++) {
    kill_source_client();
    xadd(k, 300 + round * 100, 100, NULL);
    run_for(20);
  }
  want = 600;
  CHECK(run_until(got_want, 8000));
  run_for(300);
  CHECK_EQ_INT(emitted, 600);
  check_seq(0, 0, 600);
  CHECK_EQ_INT(fails, 0);
  src_close(&s);
  reset();
}

/* Redis down at start: retried until it comes up; down for good: fail. */
static void test_unreachable(void) {
  static sl_node_cfg_t cfg;
  sl_source_t s;
  char saved[64], k[64];
  snprintf(saved, sizeof saved, "%s", url);
  int p = free_port();
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", p);
  key(k, sizeof k, "down");
  reset();
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  run_for(500); /* a few refused attempts */
  CHECK_EQ_INT(fails, 0);
  pid_t pid = redis_start(p);
  redisContext *own = redisConnect("127.0.0.1", p);
  CHECK(own && !own->err);
  freeReplyObject(redisCommand(own, "SELECT 3"));
  freeReplyObject(redisCommand(own, "XADD %s * v 0", k));
  want = 1;
  CHECK(run_until(got_want, 5000));
  CHECK_EQ_STR(vals[0], "0");
  /* Redis restarted (empty): the source reconnects, makes the group again */
  redisFree(own);
  redis_stop(pid);
  run_for(300);
  pid = redis_start(p);
  own = redisConnect("127.0.0.1", p);
  CHECK(own && !own->err);
  freeReplyObject(redisCommand(own, "SELECT 3"));
  run_for(2500); /* back-off, reconnect, group made again */
  freeReplyObject(redisCommand(own, "XADD %s * v 1", k));
  want = 2;
  CHECK(run_until(got_want, 5000));
  CHECK_EQ_STR(vals[1], "1");
  CHECK_EQ_INT(fails, 0);
  redisFree(own);
  /* and down for good: the source gives up */
  redis_stop(pid);
  CHECK(run_until(got_fail, 5000));
  CHECK_EQ_INT(fails, 1);
  run_for(300);
  CHECK_EQ_INT(fails, 1); /* once, no more retries */
  src_close(&s);
  reset();

  /* never reachable: fails after the timeout */
  src_init(&s, &cfg, k, "first");
  CHECK_EQ_INT(s.vt->start(&s), 0);
  double t0 = now_ms();
  CHECK(run_until(got_fail, 5000));
  CHECK(now_ms() - t0 >= 1400);
  src_close(&s);
  reset();

  /* a bad url is refused at start */
  snprintf(url, sizeof url, "http://nope");
  src_init(&s, &cfg, k, "first");
  CHECK(s.vt->start(&s) < 0);
  src_close(&s);
  snprintf(url, sizeof url, "%s", saved);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  atexit(redis_stop_all);
  pid_t own = 0;
  const char *file = getenv("SLUICE_REDIS_FILE");
  FILE *f = file ? fopen(file, "r") : NULL;
  if (f) {
    CHECK(fscanf(f, "%d", &port) == 1);
    fclose(f);
  } else {
    port = free_port();
    own = redis_start(port);
  }
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
  snprintf(prefix, sizeof prefix, "test_source_redis:%d", (int)getpid());
  rc = redisConnect("127.0.0.1", port);
  CHECK(rc && !rc->err);
  uv_loop_init(&loop);

  test_read_commit();
  test_whole_entry();
  test_pause();
  test_seek();
  test_start();
  test_reconnect();
  test_unreachable();

  /* this run's keys */
  redisReply *r = cmd("KEYS %s:*", prefix);
  for (size_t i = 0; i < r->elements; i++)
    freeReplyObject(cmd("DEL %s", r->element[i]->str));
  freeReplyObject(r);
  redisFree(rc);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  if (own)
    redis_stop(own);
  return CHECK_DONE();
}
