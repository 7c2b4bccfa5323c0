/* test_source_replay.c - `offset` and `seek` of the file and generator
 * sources (server/source_file.c, source_generator.c), and the byte counts of
 * the line splitter (server/lines.c) they rest on.
 *
 * The sources run on a real uv loop. The core's side of sources (source.c)
 * is replaced by the fakes below, which record the lines emitted and can
 * pause the source after a given number of them (as back-pressure would);
 * this test calls nothing else of the core, so source.c is not linked in.
 */
#include "check.h"
#include "endpoint.h"
#include "lines.h"
#include "source_file.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t loop;
static char out[1 << 20]; /* lines emitted, each followed by "|" */
static size_t out_len;
static long emitted, pause_after = -1, ends, closing_seen;

/* ---- fakes of the core's source calls ---- */

int sl_source_emit(sl_source_t *s, const char *line, size_t n, double t) {
  (void)t;
  if (out_len + n + 1 < sizeof out) {
    memcpy(out + out_len, line, n);
    out_len += n;
    out[out_len++] = '|';
    out[out_len] = '\0';
  }
  if (++emitted == pause_after)
    s->paused = 1;
  return 0;
}

void sl_source_flush(sl_source_t *s) {
  (void)s;
}

void sl_source_end(sl_source_t *s, int closing) {
  s->ended = 1;
  ends++;
  closing_seen = closing;
}

void sl_source_reject(sl_source_t *s, const char *why) {
  (void)s;
  (void)why;
}

/* ---- helpers ---- */

static void reset_out(void) {
  out_len = 0;
  out[0] = '\0';
  emitted = ends = closing_seen = 0;
  pause_after = -1;
}

static void on_closed(sl_source_t *s) {
  (void)s;
}

static void src_init(sl_source_t *s, const sl_source_vt_t *vt,
                     const sl_node_cfg_t *cfg) {
  memset(s, 0, sizeof *s);
  s->vt = vt;
  s->cfg = cfg;
  s->loop = &loop;
}

static void src_close(sl_source_t *s) {
  s->vt->close(s, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- the splitter's byte counts ---- */

static void nop_line(void *ud, const char *line, size_t n) {
  (void)ud;
  (void)line;
  (void)n;
}

static void test_pending(void) {
  sl_lines_t l;
  const char *in = "ab\ncde\r\nfg";
  sl_lines_init(&l, 4, nop_line, NULL, NULL);
  sl_lines_feed(&l, in, 1); /* "a" */
  CHECK_EQ_INT(sl_lines_pending(&l), 1);
  sl_lines_feed(&l, in + 1, 4); /* "b\ncd" */
  CHECK_EQ_INT(sl_lines_pending(&l), 2);
  sl_lines_feed(&l, in + 5, 5); /* "e\r\nfg" */
  CHECK_EQ_INT(sl_lines_pending(&l), 2);
  sl_lines_finish(&l);
  CHECK_EQ_INT(sl_lines_pending(&l), 0);
  /* an oversized line being discarded is pending as well */
  sl_lines_feed(&l, "123456", 6);
  CHECK_EQ_INT(sl_lines_pending(&l), 6);
  sl_lines_feed(&l, "78\nx", 4);
  CHECK_EQ_INT(sl_lines_pending(&l), 1);
  sl_lines_reset(&l);
  CHECK_EQ_INT(sl_lines_pending(&l), 0);
  sl_lines_free(&l);
  CHECK_EQ_INT(sl_fsrc_next_offset(100, 7), 93);
  CHECK_EQ_INT(sl_fsrc_next_offset(100, 0), 100);
  CHECK_EQ_INT(sl_fsrc_next_offset(-1, 0), -1);
}

/* ---- the file source ---- */

static char *make_file(const char *dir, const char *name, const char *text,
                       size_t n) {
  static char p[2][512];
  static int which;
  char *path = p[which++ & 1];
  snprintf(path, 512, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK_EQ_INT(fwrite(text, 1, n, f), n);
  fclose(f);
  return path;
}

static void test_file_small(const char *dir) {
  static sl_node_cfg_t cfg = {.name = "in", .kind = "file"};
  sl_source_t s;
  sl_cfg_set_str(&cfg, "path", make_file(dir, "small.txt", "aa\nbbb\ncc", 9));
  src_init(&s, &sl_source_file_vt, &cfg);
  reset_out();
  CHECK_EQ_INT(s.vt->seek(&s, 3), 0);
  CHECK_EQ_INT(s.vt->offset(&s), 3);
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_STR(out, "bbb|cc|");
  CHECK_EQ_INT(ends, 1);
  CHECK_EQ_INT(closing_seen, 1);
  CHECK_EQ_INT(s.vt->offset(&s), 9);   /* ended at EOF: the size */
  CHECK_EQ_INT(s.vt->seek(&s, 0), -1); /* too late */
  src_close(&s);
  /* an offset past the end: WARN, read from the end (nothing) */
  src_init(&s, &sl_source_file_vt, &cfg);
  reset_out();
  CHECK_EQ_INT(s.vt->seek(&s, 100), 0);
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_STR(out, "");
  CHECK_EQ_INT(s.vt->offset(&s), 9);
  src_close(&s);
  /* seeked but never started: close frees it */
  src_init(&s, &sl_source_file_vt, &cfg);
  CHECK_EQ_INT(s.vt->seek(&s, 3), 0);
  src_close(&s);
}

/* A file of lines "L<i>" padded so that a line spans the 64 KiB chunk end:
 * pausing after the first chunk, offset is that line's start, and a fresh
 * source seeked there emits exactly the remaining lines. */
static void test_file_chunks(const char *dir) {
  size_t cap = 200000, n = 0, line_start[20000];
  char *text = malloc(cap);
  int nlines = 0;
  CHECK(text != NULL);
  while (n < 150000) {
    line_start[nlines] = n;
    n += (size_t)snprintf(text + n, cap - n, "line-%05d-xxxxxxxxxxxxx\n",
                          nlines);
    nlines++;
  }
  static sl_node_cfg_t cfg = {.name = "in", .kind = "file"};
  sl_cfg_set_str(&cfg, "path", make_file(dir, "big.txt", text, n));
  sl_source_t s;
  src_init(&s, &sl_source_file_vt, &cfg);
  reset_out();
  pause_after = 1; /* pauses after the first chunk's lines */
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  long first = emitted;
  CHECK(first > 1 && first < nlines);
  int64_t off = s.vt->offset(&s);
  CHECK_EQ_INT(off, line_start[first]);
  CHECK(off < 65536 && off + 25 > 65536);
  /* the rest, by resuming */
  size_t head_len = out_len;
  s.paused = 0;
  s.vt->resume(&s);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(emitted, nlines);
  CHECK_EQ_INT(s.vt->offset(&s), n);
  char *whole = strdup(out);
  CHECK(whole != NULL);
  src_close(&s);
  /* the rest, by a fresh source seeked to the offset */
  src_init(&s, &sl_source_file_vt, &cfg);
  reset_out();
  CHECK_EQ_INT(s.vt->seek(&s, off), 0);
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(emitted, nlines - first);
  CHECK_EQ_STR(out, whole + head_len);
  src_close(&s);
  free(whole);
  free(text);
}

/* ---- the generator ---- */

static void test_generator(void) {
  static sl_node_cfg_t cfg = {.name = "gen", .kind = "generator"};
  sl_cfg_set_num(&cfg, "count", 10);
  sl_source_t s;
  src_init(&s, &sl_source_generator_vt, &cfg);
  reset_out();
  CHECK_EQ_INT(s.vt->offset(&s), 1);
  CHECK_EQ_INT(s.vt->seek(&s, 4), 0);
  pause_after = 2;
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_STR(out, "4|5|");
  CHECK_EQ_INT(s.vt->offset(&s), 6);
  s.paused = 0;
  s.vt->resume(&s);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_STR(out, "4|5|6|7|8|9|10|");
  CHECK_EQ_INT(ends, 1);
  CHECK_EQ_INT(closing_seen, 1);
  CHECK_EQ_INT(s.vt->offset(&s), 11);
  src_close(&s);
  /* seeked past count: ends at once */
  src_init(&s, &sl_source_generator_vt, &cfg);
  reset_out();
  CHECK_EQ_INT(s.vt->seek(&s, 11), 0);
  CHECK_EQ_INT(s.vt->start(&s), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_STR(out, "");
  CHECK_EQ_INT(ends, 1);
  src_close(&s);
  /* bad offsets; seeked but never started */
  src_init(&s, &sl_source_generator_vt, &cfg);
  CHECK_EQ_INT(s.vt->seek(&s, 0), -1);
  CHECK_EQ_INT(s.vt->seek(&s, 3), 0);
  src_close(&s);
}

int main(void) {
  char dir[] = "/tmp/sluice_replay_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  uv_loop_init(&loop);
  test_pending();
  test_file_small(dir);
  test_file_chunks(dir);
  test_generator();
  uv_loop_close(&loop);
  char p[600];
  snprintf(p, sizeof p, "%s/small.txt", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/big.txt", dir);
  unlink(p);
  rmdir(dir);
  return CHECK_DONE();
}
