/* sink_line.c - the `stdout` and `file` sinks: one line per record.
 *
 * Runs on the I/O thread. Owns the output file descriptor (the file sink's
 * own, or fd 1 which it never closes), two byte buffers (lines waiting, and
 * the bytes of the write in flight), one uv_fs_t request and a retry timer.
 * Also home of sl_sink_render (sink_render.h), shared with the tcp sink.
 *
 * `write` renders a batch into the waiting buffer. Writes go through
 * uv_fs_write (the libuv thread pool), one at a time, at the fd's position
 * (so fd 1 may be a pipe, a terminal or a file). A write starts when 64 KiB
 * are waiting, on `flush` (every 100 ms), and right after the previous write
 * as long as lines keep coming: under load the writes grow to whatever
 * accumulated meanwhile. Past 4 MiB held the sink says busy, and ready again
 * below 1 MiB. A short write is continued; EAGAIN (an fd 1 that someone made
 * non-blocking) is retried after 10 ms; any other error fails the sink.
 *
 * The file sink truncates its file at start: a fresh run writes a fresh file
 * (exactly-once appending comes with checkpoints). `finish` writes everything
 * then fsyncs the file; `close` also writes what is waiting before it closes.
 */
#include "endpoint.h"
#include "log.h"
#include "sink_render.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LS_WRITE_AT (64 * 1024)
#define LS_HIGH (4u << 20)
#define LS_LOW (1u << 20)
#define LS_RETRY_MS 10

typedef struct lsink_s {
  sl_sink_t *k;
  uv_file fd;
  int is_file;      /* owns fd; fsync at finish */
  const char *name; /* the path, or "stdout" */
  sl_buf_t wait;    /* rendered lines not yet handed to a write */
  sl_buf_t out;     /* the bytes of the current write */
  size_t out_off;   /* of which already written */
  uv_fs_t req;
  uv_timer_t retry;
  int in_flight; /* req is busy (a write or the fsync) */
  int retrying;  /* the retry timer is armed */
  int failed, finishing, closing, timer_closed;
  sl_sink_cb finish_done, close_done;
} lsink_t;

/* ---- batch -> lines ---- */

int sl_sink_render(sl_buf_t *out, const uint8_t *data, size_t len,
                   uint64_t *nrec) {
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  size_t mark = out->len;
  uint64_t n = 0;
  int rc;
  *nrec = 0;
  if (sl_codec_reader_init(&r, data, len) < 0)
    return -1;
  while ((rc = sl_codec_reader_next(&r, &rec)) == 1) {
    if (sl_codec_line(out, rec.value, rec.value_end) < 0 ||
        sl_buf_append(out, "\n", 1) < 0) {
      rc = -1;
      break;
    }
    n++;
  }
  if (rc < 0) {
    out->len = mark;
    return -1;
  }
  *nrec = n;
  return 0;
}

/* ---- writing ---- */

static size_t ls_held(lsink_t *l) {
  return l->wait.len + (l->out.len - l->out_off);
}

static int ls_idle(lsink_t *l) {
  return !l->in_flight && !l->retrying;
}

static void ls_check_ready(lsink_t *l) {
  if (l->k->busy && ls_held(l) < LS_LOW)
    sl_sink_ready(l->k);
}

static void ls_drop(lsink_t *l) {
  l->wait.len = l->out.len = l->out_off = 0;
}

static void ls_kick(lsink_t *l);
static void ls_finish_close(lsink_t *l);

/* Finishing, and everything is written: call finish's done (once). */
static void ls_finished(lsink_t *l) {
  sl_sink_cb done = l->finish_done;
  l->finish_done = NULL;
  if (done)
    done(l->k);
}

static void ls_fail(lsink_t *l, const char *what, int err) {
  char why[512];
  snprintf(why, sizeof why, "cannot %s %s: %s", what, l->name,
           uv_strerror(err));
  l->failed = 1;
  ls_drop(l);
  sl_sink_fail(l->k, why);
  ls_check_ready(l);
  if (l->finishing)
    ls_finished(l);
}

static void ls_on_fsync(uv_fs_t *req) {
  lsink_t *l = req->data;
  int rc = (int)req->result;
  uv_fs_req_cleanup(req);
  l->in_flight = 0;
  if (rc < 0 && !l->failed)
    ls_fail(l, "fsync", rc);
  else
    ls_finished(l);
  if (l->closing)
    ls_finish_close(l);
}

/* All written: fsync a file, then report finished. */
static void ls_sync(lsink_t *l) {
  if (!l->is_file) {
    ls_finished(l);
    return;
  }
  l->req.data = l;
  int rc = uv_fs_fsync(l->k->loop, &l->req, l->fd, ls_on_fsync);
  if (rc < 0) {
    uv_fs_req_cleanup(&l->req);
    ls_fail(l, "fsync", rc);
    return;
  }
  l->in_flight = 1;
}

static void ls_on_retry(uv_timer_t *t) {
  lsink_t *l = t->data;
  l->retrying = 0;
  ls_kick(l);
}

static void ls_on_write(uv_fs_t *req) {
  lsink_t *l = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  l->in_flight = 0;
  if (r == UV_EAGAIN && !l->closing) {
    l->retrying = 1;
    uv_timer_start(&l->retry, ls_on_retry, LS_RETRY_MS, 0);
    return;
  }
  if (r < 0) {
    ls_fail(l, "write", (int)r);
  } else {
    l->out_off += (size_t)r;
    ls_check_ready(l);
  }
  ls_kick(l);
  if (l->closing)
    ls_finish_close(l);
}

static void ls_write(lsink_t *l) {
  uv_buf_t iov = uv_buf_init((char *)l->out.data + l->out_off,
                             (unsigned)(l->out.len - l->out_off));
  l->req.data = l;
  int rc = uv_fs_write(l->k->loop, &l->req, l->fd, &iov, 1, -1, ls_on_write);
  if (rc < 0) {
    uv_fs_req_cleanup(&l->req);
    ls_fail(l, "write", rc);
    return;
  }
  l->in_flight = 1;
}

/* Starts the next write if none is in flight: the rest of the current one,
 * else everything waiting; with nothing left, completes a finish. */
static void ls_kick(lsink_t *l) {
  if (!ls_idle(l) || l->failed)
    return;
  if (l->out_off == l->out.len && l->wait.len > 0) {
    sl_buf_t t = l->out; /* swap: wait becomes the write, keeps capacity */
    l->out = l->wait;
    l->wait = t;
    l->wait.len = 0;
    l->out_off = 0;
  }
  if (l->out_off < l->out.len)
    ls_write(l);
  else if (l->finishing && l->finish_done)
    ls_sync(l);
}

/* ---- the vtable ---- */

static lsink_t *ls_new(sl_sink_t *k, uv_file fd, int is_file,
                       const char *name) {
  lsink_t *l = calloc(1, sizeof *l);
  if (!l) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", k->cfg->name);
    return NULL;
  }
  l->k = k;
  l->fd = fd;
  l->is_file = is_file;
  l->name = name;
  sl_buf_init(&l->wait);
  sl_buf_init(&l->out);
  uv_timer_init(k->loop, &l->retry);
  l->retry.data = l;
  k->impl = l;
  return l;
}

static int stdout_start(sl_sink_t *k) {
  return ls_new(k, 1, 0, "stdout") ? 0 : -1;
}

static int file_start(sl_sink_t *k) {
  const char *path = k->cfg->path;
  uv_fs_t req;
  if (!path) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': no path", k->cfg->name);
    return -1;
  }
  int fd = uv_fs_open(NULL, &req, path,
                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot open %s: %s", k->cfg->name, path,
           uv_strerror(fd));
    return -1;
  }
  if (ls_new(k, fd, 1, path))
    return 0;
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
  return -1;
}

static int ls_write_batch(sl_sink_t *k, const uint8_t *data, size_t len) {
  lsink_t *l = k->impl;
  uint64_t n;
  if (l->failed)
    return 0; /* the pipeline is failing: drop */
  if (sl_sink_render(&l->wait, data, len, &n) < 0)
    return -1;
  if (l->wait.len >= LS_WRITE_AT)
    ls_kick(l);
  if (ls_held(l) > LS_HIGH)
    k->busy = 1;
  return 0;
}

static void ls_flush(sl_sink_t *k) {
  if (k->impl)
    ls_kick(k->impl);
}

static void ls_finish(sl_sink_t *k, sl_sink_cb done) {
  lsink_t *l = k->impl;
  if (!l) {
    done(k);
    return;
  }
  l->finishing = 1;
  l->finish_done = done;
  if (l->failed)
    ls_finished(l);
  else
    ls_kick(l);
}

/* Frees l once the timer is closed and no request is in flight, after
 * writing what was waiting (unless the sink failed). */
static void ls_finish_close(lsink_t *l) {
  if (l->in_flight || !l->timer_closed)
    return;
  if (!l->failed && ls_held(l) > 0) {
    ls_kick(l);
    if (l->in_flight)
      return;
  }
  if (l->is_file) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, l->fd, NULL);
    uv_fs_req_cleanup(&req);
  }
  sl_sink_t *k = l->k;
  sl_sink_cb done = l->close_done;
  sl_buf_free(&l->wait);
  sl_buf_free(&l->out);
  free(l);
  done(k);
}

static void ls_on_timer_closed(uv_handle_t *h) {
  lsink_t *l = h->data;
  l->timer_closed = 1;
  l->retrying = 0;
  ls_finish_close(l);
}

static void ls_close(sl_sink_t *k, sl_sink_cb done) {
  lsink_t *l = k->impl;
  k->impl = NULL;
  if (!l) {
    done(k);
    return;
  }
  l->closing = 1;
  l->close_done = done;
  uv_close((uv_handle_t *)&l->retry, ls_on_timer_closed);
}

const sl_sink_vt_t sl_sink_stdout_vt = {
    .kind = "stdout",
    .start = stdout_start,
    .write = ls_write_batch,
    .flush = ls_flush,
    .finish = ls_finish,
    .close = ls_close,
};

const sl_sink_vt_t sl_sink_file_vt = {
    .kind = "file",
    .start = file_start,
    .write = ls_write_batch,
    .flush = ls_flush,
    .finish = ls_finish,
    .close = ls_close,
};
