/* source_stdin.c - the `stdin` source: one line per record, read from fd 0.
 *
 * Runs on the I/O thread. Owns the stream handle on fd 0 (a uv_tty_t for a
 * terminal, a uv_pipe_t for a pipe or a unix socket, a uv_tcp_t for a TCP
 * socket), its 64 KiB read buffer and its line splitter. When stdin is a
 * regular file or a character device (`sluice run p.conf < data.txt`,
 * /dev/null), streams cannot read it: the file source's reader
 * (source_file.h) reads it with uv_fs_read from its current position instead.
 *
 * Back-pressure is uv_read_stop / uv_read_start. EOF delivers a last line
 * without "\n" and ends the source with closing = 1. A read error is logged
 * and ends it as stopped (closing = 0).
 */
#include "endpoint.h"
#include "lines.h"
#include "log.h"
#include "luaapi.h"
#include "source_file.h"

#include <stdio.h>
#include <stdlib.h>

#define STDIN_CHUNK (64 * 1024)

typedef struct stdin_src_s {
  sl_source_t *s;
  sl_fsrc_t *file; /* stdin is a regular file: everything goes through it */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tty_t tty;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } h;
  int reading, eof;
  uint64_t line_no;
  sl_source_cb done;
  sl_lines_t lines;
  char buf[STDIN_CHUNK];
} stdin_src_t;

/* ---- lines ---- */

static void stdin_on_line(void *ud, const char *line, size_t n) {
  stdin_src_t *in = ud;
  in->line_no++;
  sl_source_emit(in->s, line, n, sl_now_ms());
}

static void stdin_on_reject(void *ud, size_t n) {
  stdin_src_t *in = ud;
  char why[160];
  in->line_no++;
  snprintf(why, sizeof why,
           "line of %zu bytes exceeds max_line %zu at stdin:%llu", n,
           in->lines.max_line, (unsigned long long)in->line_no);
  sl_source_reject(in->s, why);
}

/* ---- reading a stream ---- */

static void stdin_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  stdin_src_t *in = h->data;
  (void)hint;
  *buf = uv_buf_init(in->buf, STDIN_CHUNK);
}

static void stdin_read_stop(stdin_src_t *in) {
  if (in->reading)
    uv_read_stop(&in->h.stream);
  in->reading = 0;
}

static void stdin_on_end(stdin_src_t *in, ssize_t err) {
  stdin_read_stop(in);
  in->eof = 1;
  if (in->s->ended)
    return;
  if (err == UV_EOF) {
    sl_lines_finish(&in->lines);
    sl_source_end(in->s, 1);
    return;
  }
  sl_log(SL_LOG_ERROR, "source", "'%s': cannot read stdin: %s",
         in->s->cfg->name, uv_strerror((int)err));
  sl_source_end(in->s, 0);
}

static void stdin_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  stdin_src_t *in = st->data;
  (void)buf;
  if (n < 0) {
    stdin_on_end(in, n);
    return;
  }
  if (n == 0 || in->s->ended)
    return;
  if (sl_lines_feed(&in->lines, in->buf, (size_t)n) < 0)
    sl_log(SL_LOG_ERROR, "source", "'%s': out of memory: a line was dropped",
           in->s->cfg->name);
  sl_source_flush(in->s);
  if (in->s->paused)
    stdin_read_stop(in);
}

static void stdin_read_start(stdin_src_t *in) {
  if (in->reading || in->eof || in->s->ended || in->s->paused)
    return;
  int rc = uv_read_start(&in->h.stream, stdin_alloc, stdin_on_read);
  if (rc < 0) {
    stdin_on_end(in, rc);
    return;
  }
  in->reading = 1;
}

/* ---- start ---- */

/* Opens fd 0 as the stream handle its type calls for. On failure after the
 * handle was initialized, *inited says it must be closed. */
static int stdin_open_stream(stdin_src_t *in, uv_handle_type type,
                             int *inited) {
  uv_loop_t *loop = in->s->loop;
  int rc;
  *inited = 0;
  if (type == UV_TTY) {
    rc = uv_tty_init(loop, &in->h.tty, 0, 1);
    *inited = rc == 0;
  } else if (type == UV_TCP) {
    rc = uv_tcp_init(loop, &in->h.tcp);
    *inited = rc == 0;
    if (rc == 0)
      rc = uv_tcp_open(&in->h.tcp, 0);
  } else {
    rc = uv_pipe_init(loop, &in->h.pipe, 0);
    *inited = rc == 0;
    if (rc == 0)
      rc = uv_pipe_open(&in->h.pipe, 0);
  }
  in->h.handle.data = in;
  return rc;
}

static stdin_src_t *stdin_new(sl_source_t *s) {
  stdin_src_t *in = calloc(1, sizeof *in);
  if (!in) {
    sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
    return NULL;
  }
  in->s = s;
  size_t max = (size_t)sl_cfg_num(s->cfg, "max_line", SL_LINES_DEFAULT_MAX);
  sl_lines_init(&in->lines, max, stdin_on_line, stdin_on_reject, in);
  return in;
}

static void stdin_free(uv_handle_t *h) {
  stdin_src_t *in = h->data;
  sl_lines_free(&in->lines);
  free(in);
}

static int stdin_start_stream(stdin_src_t *in, uv_handle_type type) {
  int inited;
  int rc = stdin_open_stream(in, type, &inited);
  if (rc == 0) {
    stdin_read_start(in);
    return 0;
  }
  sl_log(SL_LOG_ERROR, "source", "'%s': cannot open stdin: %s",
         in->s->cfg->name, uv_strerror(rc));
  if (inited) /* in is freed once the handle is closed */
    uv_close(&in->h.handle, stdin_free);
  else
    free(in);
  return -1;
}

static int stdin_start(sl_source_t *s) {
  uv_handle_type type = uv_guess_handle(0);
  if (type == UV_UNKNOWN_HANDLE || type == UV_UDP) {
    sl_log(SL_LOG_ERROR, "source", "'%s': stdin is closed or not readable",
           s->cfg->name);
    return -1;
  }
  stdin_src_t *in = stdin_new(s);
  if (!in)
    return -1;
  if (type != UV_FILE) {
    if (stdin_start_stream(in, type) < 0)
      return -1;
  } else if (!(in->file = sl_fsrc_start(s, 0, 0, -1, 0, "stdin"))) {
    free(in);
    return -1;
  }
  s->impl = in;
  return 0;
}

/* ---- pause, resume, stop, close ---- */

static void stdin_pause(sl_source_t *s) {
  stdin_src_t *in = s->impl;
  if (in && !in->file)
    stdin_read_stop(in);
}

static void stdin_resume(sl_source_t *s) {
  stdin_src_t *in = s->impl;
  if (in && in->file)
    sl_fsrc_resume(in->file);
  else if (in)
    stdin_read_start(in);
}

static void stdin_stop(sl_source_t *s) {
  stdin_src_t *in = s->impl;
  if (in && in->file) {
    sl_fsrc_stop(in->file);
    return;
  }
  if (in)
    stdin_read_stop(in);
  if (!s->ended)
    sl_source_end(s, 0);
}

static void stdin_on_closed(uv_handle_t *h) {
  stdin_src_t *in = h->data;
  sl_source_t *s = in->s;
  sl_source_cb done = in->done;
  stdin_free(h);
  done(s);
}

static void stdin_close(sl_source_t *s, sl_source_cb done) {
  stdin_src_t *in = s->impl;
  s->impl = NULL;
  if (!in) {
    done(s);
  } else if (in->file) {
    sl_fsrc_t *f = in->file;
    sl_lines_free(&in->lines);
    free(in);
    sl_fsrc_close(f, done);
  } else {
    in->done = done;
    stdin_read_stop(in);
    uv_close(&in->h.handle, stdin_on_closed);
  }
}

const sl_source_vt_t sl_source_stdin_vt = {
    .kind = "stdin",
    .start = stdin_start,
    .pause = stdin_pause,
    .resume = stdin_resume,
    .stop = stdin_stop,
    .close = stdin_close,
};
