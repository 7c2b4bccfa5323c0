/* source_file.c - the `file` source: one line per record, read from a file.
 *
 * Runs on the I/O thread. Owns the file descriptor, one uv_fs_t read request
 * (at most one read in flight), a 64 KiB read buffer, the poll timer of
 * `follow`, and the line splitter that carries a partial line between reads.
 *
 * Reads go through uv_fs_read (the libuv thread pool) at explicit offsets, so
 * the loop never blocks on the disk and the offset of the next byte is always
 * known (checkpoints will replay from it). After each chunk the lines are
 * emitted, the batch flushed, and the next read issued unless the core paused
 * the source; resume issues it. At EOF a bounded file ends the source with
 * closing = 1, delivering a last line without "\n"; with `follow` the file is
 * checked for growth every 200 ms instead (a file that shrank was truncated,
 * e.g. by copytruncate: it is read again from its start). A read error is
 * logged and ends the source as stopped (closing = 0): its input did not end.
 *
 * Replay: `offset` is the byte offset of the first byte of the next line not
 * yet handed to sl_source_emit: the position of the next read minus the bytes
 * of the unfinished line the splitter holds (or of the oversized line it is
 * discarding); once ended at EOF, the size consumed. The read position only
 * moves in the read callback, so the value is exact whenever the coordinator
 * asks between callbacks (a read in flight has emitted nothing yet). `seek`,
 * called before start, makes start read from that offset with an empty
 * splitter. A file shorter than the offset (replaced or truncated since the
 * checkpoint) is read from its end, after a WARN: nothing it held then can
 * be told apart any more, and re-reading it from 0 would duplicate. Works the
 * same with `follow`.
 *
 * The reader (sl_fsrc_t) is shared with the stdin source (source_file.h).
 */
#include "source_file.h"

#include "lines.h"
#include "log.h"
#include "luaapi.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FSRC_CHUNK (64 * 1024)
#define FSRC_POLL_MS 200

struct sl_fsrc_s {
  sl_source_t *s;
  uv_file fd;
  int own_fd, follow;
  int64_t offset;   /* of the next read; -1: the fd's current position */
  uint64_t line_no; /* lines seen so far, for log lines */
  double read_ms;   /* when the chunk being split was read */
  int reading;      /* the read request is in flight */
  int waiting;      /* follow: the poll timer is armed */
  int stopped, closing, timer_closed;
  sl_source_cb done;
  uv_fs_t req;
  uv_timer_t timer;
  sl_lines_t lines;
  char *name;
  char buf[FSRC_CHUNK];
};

static void fsrc_read(sl_fsrc_t *f);

/* ---- lines ---- */

static void fsrc_on_line(void *ud, const char *line, size_t n) {
  sl_fsrc_t *f = ud;
  f->line_no++;
  sl_source_emit(f->s, line, n, f->read_ms);
}

static void fsrc_on_reject(void *ud, size_t n) {
  sl_fsrc_t *f = ud;
  char why[512];
  f->line_no++;
  snprintf(why, sizeof why, "line of %zu bytes exceeds max_line %zu at %s:%llu",
           n, f->lines.max_line, f->name, (unsigned long long)f->line_no);
  sl_source_reject(f->s, why);
}

/* ---- reading ---- */

static int fsrc_idle(sl_fsrc_t *f) {
  return !f->reading && !f->waiting && !f->stopped && !f->closing &&
         !f->s->ended;
}

static void fsrc_fail(sl_fsrc_t *f, int err) {
  sl_log(SL_LOG_ERROR, "source", "'%s': cannot read %s: %s", f->s->cfg->name,
         f->name, uv_strerror(err));
  sl_source_end(f->s, 0);
}

static void fsrc_on_poll(uv_timer_t *t) {
  sl_fsrc_t *f = t->data;
  uv_fs_t req;
  f->waiting = 0;
  int rc = uv_fs_fstat(NULL, &req, f->fd, NULL);
  int64_t size = rc == 0 ? (int64_t)req.statbuf.st_size : -1;
  uv_fs_req_cleanup(&req);
  if (rc == 0 && f->offset >= 0 && size < f->offset) {
    sl_log(SL_LOG_WARN, "source",
           "'%s': %s shrank to %lld bytes: reading it "
           "again from the start",
           f->s->cfg->name, f->name, (long long)size);
    f->offset = 0;
    sl_lines_reset(&f->lines);
  } else if (rc == 0 && f->offset >= 0 && size == f->offset) {
    f->waiting = 1; /* nothing new: look again later */
    uv_timer_start(&f->timer, fsrc_on_poll, FSRC_POLL_MS, 0);
    return;
  }
  fsrc_read(f);
}

static void fsrc_eof(sl_fsrc_t *f) {
  if (f->follow) {
    f->waiting = 1;
    uv_timer_start(&f->timer, fsrc_on_poll, FSRC_POLL_MS, 0);
    return;
  }
  sl_lines_finish(&f->lines);
  sl_source_end(f->s, 1);
}

static void fsrc_chunk(sl_fsrc_t *f, size_t n) {
  if (f->offset >= 0)
    f->offset += (int64_t)n;
  f->read_ms = sl_now_ms();
  if (sl_lines_feed(&f->lines, f->buf, n) < 0)
    sl_log(SL_LOG_ERROR, "source",
           "'%s': out of memory: a line of %s was "
           "dropped",
           f->s->cfg->name, f->name);
  sl_source_flush(f->s);
  fsrc_read(f);
}

static void fsrc_finish_close(sl_fsrc_t *f);

static void fsrc_on_read(uv_fs_t *req) {
  sl_fsrc_t *f = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  f->reading = 0;
  if (f->closing) {
    fsrc_finish_close(f);
  } else if (f->stopped || f->s->ended) {
    return; /* stopped while the read was in flight: drop it */
  } else if (r < 0) {
    fsrc_fail(f, (int)r);
  } else if (r == 0) {
    fsrc_eof(f);
  } else {
    fsrc_chunk(f, (size_t)r);
  }
}

/* Issues the next read unless one is in flight, the source is paused, or it
 * is waiting for the file to grow. */
static void fsrc_read(sl_fsrc_t *f) {
  if (!fsrc_idle(f) || f->s->paused)
    return;
  uv_buf_t iov = uv_buf_init(f->buf, FSRC_CHUNK);
  f->req.data = f;
  int rc =
      uv_fs_read(f->s->loop, &f->req, f->fd, &iov, 1, f->offset, fsrc_on_read);
  if (rc < 0) {
    uv_fs_req_cleanup(&f->req);
    fsrc_fail(f, rc);
    return;
  }
  f->reading = 1;
}

/* ---- the reader's life ---- */

sl_fsrc_t *sl_fsrc_start(sl_source_t *s, uv_file fd, int own_fd, int64_t offset,
                         int follow, const char *name) {
  sl_fsrc_t *f = calloc(1, sizeof *f);
  char *copy = strdup(name);
  if (!f || !copy) {
    sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
    free(f);
    free(copy);
    return NULL;
  }
  f->s = s;
  f->fd = fd;
  f->own_fd = own_fd;
  f->offset = offset;
  f->follow = follow;
  f->name = copy;
  size_t max = (size_t)sl_cfg_num(s->cfg, "max_line", SL_LINES_DEFAULT_MAX);
  sl_lines_init(&f->lines, max, fsrc_on_line, fsrc_on_reject, f);
  uv_timer_init(s->loop, &f->timer);
  f->timer.data = f;
  fsrc_read(f);
  return f;
}

void sl_fsrc_resume(sl_fsrc_t *f) {
  fsrc_read(f);
}

int64_t sl_fsrc_next_offset(int64_t read_pos, uint64_t pending) {
  if (read_pos < 0)
    return -1;
  return (uint64_t)read_pos >= pending ? read_pos - (int64_t)pending : 0;
}

int64_t sl_fsrc_offset(const sl_fsrc_t *f) {
  return sl_fsrc_next_offset(f->offset, sl_lines_pending(&f->lines));
}

int64_t sl_fsrc_lag(const sl_fsrc_t *f) {
  if (f->offset < 0)
    return -1;
  uv_fs_t req;
  int rc = uv_fs_fstat(NULL, &req, f->fd, NULL);
  int64_t size = (int64_t)req.statbuf.st_size;
  uv_fs_req_cleanup(&req);
  if (rc < 0)
    return -1;
  int64_t off = sl_fsrc_offset(f);
  return size > off ? size - off : 0;
}

void sl_fsrc_stop(sl_fsrc_t *f) {
  f->stopped = 1;
  f->waiting = 0;
  uv_timer_stop(&f->timer);
  if (!f->s->ended)
    sl_source_end(f->s, 0);
}

/* Frees f once the timer is closed and no read is in flight. */
static void fsrc_finish_close(sl_fsrc_t *f) {
  if (f->reading || !f->timer_closed)
    return;
  if (f->own_fd) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, f->fd, NULL);
    uv_fs_req_cleanup(&req);
  }
  sl_source_t *s = f->s;
  sl_source_cb done = f->done;
  sl_lines_free(&f->lines);
  free(f->name);
  free(f);
  done(s);
}

static void fsrc_on_timer_closed(uv_handle_t *h) {
  sl_fsrc_t *f = h->data;
  f->timer_closed = 1;
  fsrc_finish_close(f);
}

void sl_fsrc_close(sl_fsrc_t *f, sl_source_cb done) {
  f->closing = 1;
  f->done = done;
  uv_close((uv_handle_t *)&f->timer, fsrc_on_timer_closed);
}

/* ---- the `file` source ---- */

/* The file source's impl: the reader once started, and the offset to start
 * from (set by seek, which runs before start). */
typedef struct file_src_s {
  sl_fsrc_t *f;
  int64_t start_at;
} file_src_t;

static file_src_t *file_impl(sl_source_t *s) {
  if (!s->impl) {
    s->impl = calloc(1, sizeof(file_src_t));
    if (!s->impl)
      sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
  }
  return s->impl;
}

/* Opens path read-only; *size gets its size. 0 ok, -1 logged. */
static int file_open(sl_source_t *s, const char *path, uv_file *fd,
                     int64_t *size) {
  uv_fs_t req;
  int rc = uv_fs_open(NULL, &req, path, O_RDONLY | O_CLOEXEC, 0, NULL);
  uv_fs_req_cleanup(&req);
  if (rc < 0)
    goto fail;
  *fd = rc;
  rc = uv_fs_fstat(NULL, &req, *fd, NULL);
  if (rc == 0 && S_ISDIR(req.statbuf.st_mode))
    rc = UV_EISDIR;
  *size = (int64_t)req.statbuf.st_size;
  uv_fs_req_cleanup(&req);
  if (rc == 0)
    return 0;
  uv_fs_close(NULL, &req, *fd, NULL);
  uv_fs_req_cleanup(&req);
fail:
  sl_log(SL_LOG_ERROR, "source", "'%s': cannot open %s: %s", s->cfg->name, path,
         uv_strerror(rc));
  return -1;
}

/* Where to start: the seek offset, or the end of a file shorter than it. */
static int64_t file_start_at(sl_source_t *s, int64_t want, int64_t size) {
  if (want <= size)
    return want;
  sl_log(SL_LOG_WARN, "source",
         "'%s': %s has %lld bytes, fewer than the restored offset %lld: "
         "reading from its end",
         s->cfg->name, sl_cfg_str(s->cfg, "path"), (long long)size,
         (long long)want);
  return size;
}

/* Opens the file and starts the reader at the seek offset. 0 ok, -1 logged. */
static int file_begin(sl_source_t *s, file_src_t *fs) {
  uv_file fd;
  int64_t size;
  if (file_open(s, sl_cfg_str(s->cfg, "path"), &fd, &size) < 0)
    return -1;
  int64_t at = file_start_at(s, fs->start_at, size);
  fs->f = sl_fsrc_start(s, fd, 1, at, sl_cfg_bool(s->cfg, "follow"),
                        sl_cfg_str(s->cfg, "path"));
  if (fs->f)
    return 0;
  uv_fs_t req;
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
  return -1;
}

static int file_start(sl_source_t *s) {
  file_src_t *fs = file_impl(s);
  if (!sl_cfg_str(s->cfg, "path"))
    sl_log(SL_LOG_ERROR, "source", "'%s': no path", s->cfg->name);
  else if (fs && file_begin(s, fs) == 0)
    return 0;
  free(s->impl);
  s->impl = NULL;
  return -1;
}

static void file_pause(sl_source_t *s) {
  (void)s; /* s->paused is checked before every read */
}

static void file_resume(sl_source_t *s) {
  file_src_t *fs = s->impl;
  if (fs && fs->f)
    sl_fsrc_resume(fs->f);
}

static void file_stop(sl_source_t *s) {
  file_src_t *fs = s->impl;
  if (fs && fs->f)
    sl_fsrc_stop(fs->f);
  else if (!s->ended)
    sl_source_end(s, 0);
}

/* Also frees an impl that seek made for a source that never started. */
static void file_close(sl_source_t *s, sl_source_cb done) {
  file_src_t *fs = s->impl;
  sl_fsrc_t *f = fs ? fs->f : NULL;
  s->impl = NULL;
  free(fs);
  if (f)
    sl_fsrc_close(f, done);
  else
    done(s);
}

static int64_t file_lag(sl_source_t *s) {
  file_src_t *fs = s->impl;
  if (!fs || !fs->f)
    return s->ended ? 0 : -1;
  return sl_fsrc_lag(fs->f);
}

static int64_t file_offset(sl_source_t *s) {
  file_src_t *fs = s->impl;
  if (!fs)
    return 0;
  return fs->f ? sl_fsrc_offset(fs->f) : fs->start_at;
}

static int file_seek(sl_source_t *s, int64_t offset) {
  file_src_t *fs = file_impl(s);
  if (!fs)
    return -1;
  if (offset < 0 || fs->f) {
    sl_log(SL_LOG_ERROR, "source", "'%s': cannot seek to %lld%s", s->cfg->name,
           (long long)offset, fs->f ? ": already started" : "");
    return -1;
  }
  fs->start_at = offset;
  return 0;
}

const sl_source_vt_t sl_source_file_vt = {
    .kind = "file",
    .start = file_start,
    .pause = file_pause,
    .resume = file_resume,
    .stop = file_stop,
    .close = file_close,
    .offset = file_offset,
    .seek = file_seek,
    .lag = file_lag,
    .lag_unit = "bytes",
};
