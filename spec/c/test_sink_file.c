/* test_sink_file.c - the file sink (server/sink_line.c), driven directly.
 *
 * The sink is made by hand (vtable, cfg, a uv loop) and fed batches built
 * with sl_codec_writer_*. Under exactly_once: staging then precommit and
 * commit publish exactly a checkpoint's lines; a "crash" before a commit
 * restores the file to the last committed checkpoint; a commit interrupted
 * half-way (the file truncated in the middle of a checkpoint's bytes) is
 * completed by restore from the staging file; restore(NULL) empties the file.
 * Without exactly_once the sink truncates at start and writes directly.
 * No test here makes the sink fail, so the core (sink.c) is never entered.
 */
#include "check.h"
#include "codec.h"
#include "endpoint.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uv_loop_t loop;
static char path[512], spath[600];
static sl_node_cfg_t cfg;
static int finished, closed;

/* ---- helpers ---- */

static void put_file(const char *p, const char *text) {
  FILE *f = fopen(p, "wb");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
}

/* The whole content of p (static buffer), or "(missing)". */
static const char *get_file(const char *p) {
  static char buf[4096];
  FILE *f = fopen(p, "rb");
  if (!f)
    return "(missing)";
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static long long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

static void on_finished(sl_sink_t *k) {
  (void)k;
  finished++;
}

static void on_closed(sl_sink_t *k) {
  (void)k;
  closed++;
}

static void sink_start(sl_sink_t *k, int exactly_once) {
  memset(k, 0, sizeof *k);
  cfg.exactly_once = exactly_once;
  k->vt = &sl_sink_file_vt;
  k->cfg = &cfg;
  k->loop = &loop;
  CHECK_EQ_INT(k->vt->start(k), 0);
}

static void sink_close(sl_sink_t *k) {
  int before = closed;
  k->vt->close(k, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(closed, before + 1);
}

/* Writes one batch of the given lines ("a|b|c"). */
static void sink_write(sl_sink_t *k, const char *lines) {
  sl_codec_writer_t w;
  sl_codec_writer_init(&w);
  CHECK_EQ_INT(sl_codec_writer_begin(&w), 0);
  for (const char *p = lines; *p;) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    CHECK_EQ_INT(sl_codec_writer_add_string(&w, p, n, 1000), 0);
    p += n + (bar != NULL);
  }
  CHECK_EQ_INT(sl_codec_writer_finish(&w), 0);
  CHECK_EQ_INT(k->vt->write(k, w.buf.data, w.buf.len), 0);
  sl_codec_writer_free(&w);
}

static uint64_t u64_at(const sl_buf_t *b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | b->data[at + (size_t)i];
  return v;
}

static void restore(sl_sink_t *k, const sl_buf_t *state, int want) {
  memset(k, 0, sizeof *k);
  k->vt = &sl_sink_file_vt;
  k->cfg = &cfg;
  k->loop = &loop;
  cfg.exactly_once = 1;
  int rc = state ? k->vt->restore(k, state->data, state->len)
                 : k->vt->restore(k, NULL, 0);
  CHECK_EQ_INT(rc, want);
}

/* ---- the cases ---- */

static void test_commit(void) {
  sl_sink_t k;
  sl_buf_t s1;
  sl_buf_init(&s1);
  put_file(path, "junk from an older run\n");
  restore(&k, NULL, 0);
  CHECK_EQ_STR(get_file(path), "");
  CHECK_EQ_INT(file_size(spath), 0);
  sink_start(&k, 1);
  sink_write(&k, "a|b");
  k.vt->flush(&k);
  CHECK_EQ_STR(get_file(path), ""); /* staged, not published */
  CHECK_EQ_STR(get_file(spath), "a\nb\n");
  CHECK_EQ_INT(k.vt->precommit(&k, 1, &s1), 0);
  CHECK_EQ_INT(s1.len, 24);
  CHECK_EQ_INT(u64_at(&s1, 0), 4);  /* P */
  CHECK_EQ_INT(u64_at(&s1, 8), 4);  /* end */
  CHECK_EQ_INT(u64_at(&s1, 16), 0); /* unpub */
  CHECK_EQ_STR(get_file(path), "");
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_STR(get_file(path), "a\nb\n");
  CHECK_EQ_INT(file_size(spath), 0);     /* all published: cleared */
  CHECK_EQ_INT(k.vt->commit(&k, 1), -1); /* not precommitted (any more) */
  sink_close(&k);
  sl_buf_free(&s1);
}

/* Checkpoint 1 committed, 2 precommitted, then a crash: back to 1. */
static void test_crash_before_commit(void) {
  sl_sink_t k;
  sl_buf_t s1, s2;
  sl_buf_init(&s1);
  sl_buf_init(&s2);
  restore(&k, NULL, 0);
  sink_start(&k, 1);
  sink_write(&k, "one|two");
  CHECK_EQ_INT(k.vt->precommit(&k, 1, &s1), 0);
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  sink_write(&k, "three");
  CHECK_EQ_INT(k.vt->precommit(&k, 2, &s2), 0);
  sink_write(&k, "four");
  sink_close(&k); /* "crash": 2 never commits; close keeps staged bytes */
  CHECK_EQ_STR(get_file(path), "one\ntwo\n");
  CHECK_EQ_STR(get_file(spath), "three\nfour\n");
  restore(&k, &s1, 0);
  CHECK_EQ_STR(get_file(path), "one\ntwo\n");
  CHECK_EQ_INT(file_size(spath), 0);
  /* the restarted run goes on appending after checkpoint 1 */
  sink_start(&k, 1);
  sink_write(&k, "three");
  sl_buf_t s2b;
  sl_buf_init(&s2b);
  CHECK_EQ_INT(k.vt->precommit(&k, 2, &s2b), 0);
  CHECK_EQ_INT(k.vt->commit(&k, 2), 0);
  CHECK_EQ_STR(get_file(path), "one\ntwo\nthree\n");
  sink_close(&k);
  /* a published file longer than the checkpoint is truncated */
  restore(&k, &s1, 0);
  CHECK_EQ_STR(get_file(path), "one\ntwo\n");
  sl_buf_free(&s1);
  sl_buf_free(&s2);
  sl_buf_free(&s2b);
}

/* Commit 2 was cut short by a crash: restore(2) completes it from staging. */
static void test_interrupted_commit(void) {
  sl_sink_t k;
  sl_buf_t s1, s2;
  sl_buf_init(&s1);
  sl_buf_init(&s2);
  restore(&k, NULL, 0);
  sink_start(&k, 1);
  sink_write(&k, "a1|a2");
  CHECK_EQ_INT(k.vt->precommit(&k, 1, &s1), 0);
  sink_write(&k, "b1|b2|b3");
  CHECK_EQ_INT(k.vt->precommit(&k, 2, &s2), 0);
  CHECK_EQ_INT(u64_at(&s2, 0), 15);
  CHECK_EQ_INT(u64_at(&s2, 8), 15);
  CHECK_EQ_INT(u64_at(&s2, 16), 0);
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_STR(get_file(path), "a1\na2\n");
  sink_write(&k, "c1");
  k.vt->flush(&k);
  sink_close(&k);
  /* the commit of 2 wrote "b1\nb" to the file, then the process died */
  put_file(path, "a1\na2\nb1\nb");
  restore(&k, &s2, 0);
  CHECK_EQ_STR(get_file(path), "a1\na2\nb1\nb2\nb3\n");
  CHECK_EQ_INT(file_size(spath), 0);
  /* a file shorter than what the checkpoint staged cannot be completed */
  put_file(path, "a1\n");
  restore(&k, &s2, -1);
  /* restore(NULL): no checkpoint, start empty */
  put_file(spath, "left over");
  restore(&k, NULL, 0);
  CHECK_EQ_STR(get_file(path), "");
  CHECK_EQ_INT(file_size(spath), 0);
  sl_buf_free(&s1);
  sl_buf_free(&s2);
}

/* Several checkpoints in flight; commits in order; offsets across a reset. */
static void test_overlapping(void) {
  sl_sink_t k;
  sl_buf_t s[5];
  for (int i = 0; i < 5; i++)
    sl_buf_init(&s[i]);
  restore(&k, NULL, 0);
  sink_start(&k, 1);
  sink_write(&k, "x1");
  CHECK_EQ_INT(k.vt->precommit(&k, 1, &s[1]), 0);
  sink_write(&k, "x2");
  CHECK_EQ_INT(k.vt->precommit(&k, 2, &s[2]), 0);
  sink_write(&k, "x3");
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  CHECK_EQ_STR(get_file(path), "x1\n");
  CHECK_EQ_INT(k.vt->commit(&k, 2), 0);
  CHECK_EQ_STR(get_file(path), "x1\nx2\n");
  CHECK_EQ_INT(k.vt->precommit(&k, 3, &s[3]), 0);
  CHECK_EQ_INT(u64_at(&s[3], 0), 9);
  CHECK_EQ_INT(k.vt->precommit(&k, 4, &s[4]), 0); /* nothing new */
  CHECK_EQ_INT(k.vt->commit(&k, 3), 0);
  CHECK_EQ_INT(file_size(spath), 0);
  CHECK_EQ_INT(k.vt->commit(&k, 4), 0);
  CHECK_EQ_STR(get_file(path), "x1\nx2\nx3\n");
  /* finish stages durably but publishes nothing; the final checkpoint does */
  sink_write(&k, "x4");
  finished = 0;
  k.vt->finish(&k, on_finished);
  CHECK_EQ_INT(finished, 1);
  CHECK_EQ_STR(get_file(spath), "x4\n");
  CHECK_EQ_STR(get_file(path), "x1\nx2\nx3\n");
  sl_buf_t fin;
  sl_buf_init(&fin);
  CHECK_EQ_INT(k.vt->precommit(&k, 5, &fin), 0);
  CHECK_EQ_INT(k.vt->commit(&k, 5), 0);
  sink_close(&k);
  CHECK_EQ_STR(get_file(path), "x1\nx2\nx3\nx4\n");
  restore(&k, &s[2], 0);
  CHECK_EQ_STR(get_file(path), "x1\nx2\n");
  for (int i = 0; i < 5; i++)
    sl_buf_free(&s[i]);
  sl_buf_free(&fin);
}

/* Without exactly_once: truncate at start, write directly; hooks are no-ops. */
static void test_plain(void) {
  sl_sink_t k;
  sl_buf_t st;
  sl_buf_init(&st);
  put_file(path, "old\n");
  unlink(spath);
  sink_start(&k, 0);
  CHECK_EQ_STR(get_file(path), "");
  sink_write(&k, "p|q");
  CHECK_EQ_INT(k.vt->precommit(&k, 1, &st), 0);
  CHECK_EQ_INT(st.len, 0);
  CHECK_EQ_INT(k.vt->commit(&k, 1), 0);
  finished = 0;
  k.vt->finish(&k, on_finished);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(finished, 1);
  CHECK_EQ_STR(get_file(path), "p\nq\n");
  CHECK_EQ_INT(file_size(spath), -1); /* no staging file */
  sink_close(&k);
  sl_buf_free(&st);
}

int main(void) {
  char dir[] = "/tmp/sluice_sink_file_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/out.txt", dir);
  snprintf(spath, sizeof spath, "%s.staging", path);
  cfg.name = "out";
  cfg.kind = "file";
  sl_cfg_set_str(&cfg, "path", path);
  uv_loop_init(&loop);
  test_commit();
  test_crash_before_commit();
  test_interrupted_commit();
  test_overlapping();
  test_plain();
  uv_loop_close(&loop);
  unlink(path);
  unlink(spath);
  rmdir(dir);
  return CHECK_DONE();
}
