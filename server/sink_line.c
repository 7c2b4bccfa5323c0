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
 * The file sink truncates its file at start: a fresh run writes a fresh file.
 * `finish` writes everything then fsyncs the file; `close` also writes what
 * is waiting before it closes.
 *
 * Exactly-once (cfg->exactly_once; the dead-letter sink is the same code):
 * records are appended to a staging file PATH.staging beside PATH, and reach
 * PATH only when their checkpoint commits. Staging writes are synchronous
 * pwrite(2)s at explicit offsets (sequential appends to a local file, which
 * land in the page cache), so no write is ever in flight and `precommit` only
 * has to write what is waiting and fsync. The sink keeps three offsets: the
 * published length of PATH, the staged length of the staging file, and the
 * staging offset of the first byte not yet published. precommit(id) appends
 * 24 bytes to the checkpoint's state, three u64 little-endian:
 *   [0] P:     the length PATH has once id commits (published length now +
 *              staged bytes not yet published, up to here);
 *   [1] end:   the staging offset where id's bytes end;
 *   [2] unpub: the staging offset of the first unpublished byte, then.
 * commit(id) copies staging[unpub, end) to the end of PATH, fsyncs PATH and
 * moves unpub to end; when everything staged is published the staging file
 * is truncated to 0 (offsets reset), else its published prefix is punched
 * out (FALLOC_FL_PUNCH_HOLE, best effort) so it does not hold the disk.
 * Commits are synchronous too (copy + fsync on the I/O thread). restore(P,
 * end, unpub), before start, makes PATH exactly P bytes: a longer PATH is
 * truncated; a shorter one (a commit interrupted by a crash) gets its missing
 * tail, staging[end - missing, end), copied from the staging file; then the
 * staging file is emptied. restore(NULL) empties both. In this mode start
 * never truncates PATH (restore decided its length) but empties the staging
 * file; finish stages and fsyncs but publishes nothing (the coordinator's
 * final checkpoint commits it); close keeps staged bytes in the staging file.
 * Without exactly_once the three hooks do nothing (and precommit appends no
 * state), so a checkpointing at_least_once pipeline may call them too.
 */
#include "endpoint.h"
#include "log.h"
#include "sink_render.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LS_WRITE_AT (64 * 1024)
#define LS_HIGH (4u << 20)
#define LS_LOW (1u << 20)
#define LS_RETRY_MS 10
#define LS_COPY_CHUNK (64 * 1024)
#define LS_STATE_LEN 24 /* precommit state: 3 x u64 LE */

/* A precommitted checkpoint not yet committed. */
typedef struct ls_ckpt_s {
  uint64_t id;
  uint64_t end; /* staging offset where its bytes end */
} ls_ckpt_t;

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
  int sync_writes; /* checkpointed at-least-once file: write(2) in place */
  /* exactly_once only (see the top comment) */
  int eo;
  int sfd;          /* the staging file */
  char *spath;      /* its path: PATH.staging */
  uint64_t pub_len; /* PATH's length */
  uint64_t staged;  /* the staging file's length */
  uint64_t unpub;   /* staging offset of the first unpublished byte */
  uint64_t punched; /* staging bytes [0, punched) already punched out */
  ls_ckpt_t *ckpts; /* precommitted, uncommitted, in id order */
  size_t n_ckpts, cap_ckpts;
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

/* ---- exactly-once: file helpers (synchronous, I/O thread) ---- */

/* Writes all of p[0..n) at off. 0 ok, -errno. */
static int ls_pwrite_all(int fd, const void *p, size_t n, uint64_t off) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = pwrite(fd, c, n, (off_t)off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    c += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* Copies src[from, to) to dst at `at`. 0 ok, -errno (-ENODATA: src is
 * shorter than `to`). */
static int ls_copy(int src, uint64_t from, uint64_t to, int dst, uint64_t at) {
  char *buf = to > from ? malloc(LS_COPY_CHUNK) : NULL;
  int rc = 0;
  if (to > from && !buf)
    return -ENOMEM;
  while (rc == 0 && from < to) {
    size_t want =
        to - from < LS_COPY_CHUNK ? (size_t)(to - from) : (size_t)LS_COPY_CHUNK;
    ssize_t r = pread(src, buf, want, (off_t)from);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      rc = r < 0 ? -errno : -ENODATA;
      break;
    }
    rc = ls_pwrite_all(dst, buf, (size_t)r, at);
    from += (uint64_t)r;
    at += (uint64_t)r;
  }
  free(buf);
  return rc;
}

static int ls_fsync(int fd) {
  return fsync(fd) < 0 ? -errno : 0;
}

/* fsyncs the folder of path, so a file just created there is durable. */
static int ls_sync_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return -ENOMEM;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = fd < 0 ? -errno : ls_fsync(fd);
  if (fd >= 0)
    close(fd);
  free(copy);
  return rc;
}

/* PATH + ".staging" (malloc'd), or NULL. */
static char *ls_staging_path(const char *path) {
  size_t n = strlen(path);
  char *s = malloc(n + sizeof ".staging");
  if (s) {
    memcpy(s, path, n);
    memcpy(s + n, ".staging", sizeof ".staging");
  }
  return s;
}

static void ls_put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t ls_get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* ---- exactly-once: staging ---- */

/* Appends the waiting lines to the staging file. 0 ok, -1 failed (logged). */
static int ls_stage(lsink_t *l) {
  if (l->failed)
    return -1;
  int rc = ls_pwrite_all(l->sfd, l->wait.data, l->wait.len, l->staged);
  if (rc < 0) {
    ls_fail(l, "write", rc);
    return -1;
  }
  l->staged += l->wait.len;
  l->wait.len = 0;
  ls_check_ready(l);
  return 0;
}

/* Stages what is waiting, and fsyncs the staging file. 0 ok, -1 failed. */
static int ls_stage_durably(lsink_t *l) {
  if (ls_stage(l) < 0)
    return -1;
  int rc = ls_fsync(l->sfd);
  if (rc < 0) {
    ls_fail(l, "fsync", rc);
    return -1;
  }
  return 0;
}

/* ls_kick in exactly-once mode: stage now; a finish also fsyncs. */
static void ls_eo_kick(lsink_t *l) {
  if (l->finishing && l->finish_done) {
    if (ls_stage_durably(l) == 0)
      ls_finished(l);
  } else if (l->wait.len > 0) {
    ls_stage(l);
  }
}

/* A file sink of a checkpointed at-least-once pipeline writes with write(2)
 * on the I/O thread, so that at a barrier everything it was given before the
 * barrier is in the kernel (it survives the process being killed) before the
 * checkpoint counts it as written. */
static void ls_sync_kick(lsink_t *l) {
  if (l->failed)
    return;
  if (l->wait.len > 0) {
    ssize_t done = 0;
    while ((size_t)done < l->wait.len) {
      ssize_t r = write(l->fd, l->wait.data + done, l->wait.len - (size_t)done);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0) {
        ls_fail(l, "write", -errno);
        return;
      }
      done += r;
    }
    l->wait.len = 0;
    ls_check_ready(l);
  }
  if (l->finishing && l->finish_done) {
    int rc = ls_fsync(l->fd);
    if (rc < 0)
      ls_fail(l, "fsync", rc);
    else
      ls_finished(l);
  }
}

/* Starts the next write if none is in flight: the rest of the current one,
 * else everything waiting; with nothing left, completes a finish. */
static void ls_kick(lsink_t *l) {
  if (l->eo) {
    ls_eo_kick(l);
    return;
  }
  if (l->sync_writes) {
    ls_sync_kick(l);
    return;
  }
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

static int file_start_eo(sl_sink_t *k);

static int file_start(sl_sink_t *k) {
  const char *path = sl_cfg_str(k->cfg, "path");
  uv_fs_t req;
  if (!path) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': no path", k->cfg->name);
    return -1;
  }
  if (k->cfg->exactly_once)
    return file_start_eo(k);
  /* a run resumed from a checkpoint appends (at_least_once: the replayed
   * records come again); a fresh run starts the file afresh */
  int how = k->resumed ? O_APPEND : O_TRUNC;
  int fd = uv_fs_open(NULL, &req, path, O_WRONLY | O_CREAT | how | O_CLOEXEC,
                      0644, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot open %s: %s", k->cfg->name, path,
           uv_strerror(fd));
    return -1;
  }
  lsink_t *l = ls_new(k, fd, 1, path);
  if (l) {
    l->sync_writes = k->cfg->checkpointing;
    return 0;
  }
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
  if (l->eo)
    close(l->sfd); /* staged, uncommitted bytes stay in the staging file */
  free(l->spath);
  free(l->ckpts);
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

/* ---- exactly-once: the committing hooks ---- */

/* Opens PATH without truncating it (restore decided its length) and an empty
 * staging file beside it. 0 ok, -1 logged. */
static int file_start_eo(sl_sink_t *k) {
  const char *path = sl_cfg_str(k->cfg, "path");
  char *spath = ls_staging_path(path);
  struct stat st;
  int fd = -1, sfd = -1, rc = -ENOMEM;
  if (!spath)
    goto fail;
  fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  sfd = open(spath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || sfd < 0 || fstat(fd, &st) < 0 || ls_sync_dir(path) < 0) {
    rc = -errno;
    goto fail;
  }
  lsink_t *l = ls_new(k, fd, 1, path);
  if (!l)
    goto fail_quiet;
  l->eo = 1;
  l->sfd = sfd;
  l->spath = spath;
  l->pub_len = (uint64_t)st.st_size;
  return 0;
fail:
  sl_log(SL_LOG_ERROR, "sink", "'%s': cannot open %s or its staging file: %s",
         k->cfg->name, path, uv_strerror(rc));
fail_quiet:
  if (fd >= 0)
    close(fd);
  if (sfd >= 0)
    close(sfd);
  free(spath);
  return -1;
}

static int ls_precommit(sl_sink_t *k, uint64_t id, sl_buf_t *state) {
  lsink_t *l = k->impl;
  if (!k->cfg->exactly_once) { /* at-least-once: written out, no state */
    if (l && l->sync_writes)
      ls_sync_kick(l);
    return l && l->failed ? -1 : 0;
  }
  if (!l || l->failed) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot precommit checkpoint %llu%s",
           k->cfg->name, (unsigned long long)id,
           l && l->failed ? ": the sink failed" : "");
    return -1;
  }
  if (ls_stage_durably(l) < 0)
    return -1;
  if (l->n_ckpts == l->cap_ckpts) {
    size_t cap = l->cap_ckpts ? l->cap_ckpts * 2 : 4;
    ls_ckpt_t *c = realloc(l->ckpts, cap * sizeof *c);
    if (!c)
      goto oom;
    l->ckpts = c;
    l->cap_ckpts = cap;
  }
  uint8_t enc[LS_STATE_LEN];
  ls_put_u64(enc, l->pub_len + (l->staged - l->unpub));
  ls_put_u64(enc + 8, l->staged);
  ls_put_u64(enc + 16, l->unpub);
  if (sl_buf_append(state, enc, sizeof enc) < 0)
    goto oom;
  l->ckpts[l->n_ckpts++] = (ls_ckpt_t){id, l->staged};
  return 0;
oom:
  sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", k->cfg->name);
  return -1;
}

/* After a commit: drop the published staging bytes from the disk. */
static void ls_compact(lsink_t *l) {
  if (l->unpub == l->staged) { /* everything published: start over */
    if (ftruncate(l->sfd, 0) < 0)
      return; /* harmless: the offsets stay valid */
    l->staged = l->unpub = l->punched = 0;
    for (size_t i = 0; i < l->n_ckpts; i++)
      l->ckpts[i].end = 0; /* checkpoints with no bytes of their own */
    return;
  }
#ifdef FALLOC_FL_PUNCH_HOLE
  if (l->unpub > l->punched &&
      fallocate(l->sfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                (off_t)l->punched, (off_t)(l->unpub - l->punched)) == 0)
    l->punched = l->unpub;
#endif
}

/* Index of precommitted checkpoint id, or -1. */
static long ls_ckpt_find(lsink_t *l, uint64_t id) {
  for (size_t i = 0; i < l->n_ckpts; i++)
    if (l->ckpts[i].id == id)
      return (long)i;
  return -1;
}

static int ls_commit(sl_sink_t *k, uint64_t id) {
  lsink_t *l = k->impl;
  if (!k->cfg->exactly_once)
    return 0;
  long i = l && !l->failed ? ls_ckpt_find(l, id) : -1;
  if (i < 0) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot commit checkpoint %llu%s",
           k->cfg->name, (unsigned long long)id,
           l && l->failed ? ": the sink failed" : ": not precommitted");
    return -1;
  }
  uint64_t end = l->ckpts[i].end;
  int rc = ls_copy(l->sfd, l->unpub, end, l->fd, l->pub_len);
  if (rc == 0)
    rc = ls_fsync(l->fd);
  if (rc < 0) {
    ls_fail(l, "publish to", rc);
    return -1;
  }
  l->pub_len += end - l->unpub;
  l->unpub = end;
  l->n_ckpts -= (size_t)i + 1;
  memmove(l->ckpts, l->ckpts + i + 1, l->n_ckpts * sizeof *l->ckpts);
  ls_compact(l);
  return 0;
}

/* restore: makes the open PATH fd exactly `want` bytes long, copying a
 * missing tail from staging[end - missing, end). 0 ok, -errno; -ERANGE: the
 * file is shorter than this checkpoint can complete. */
static int ls_restore_len(int fd, const char *spath, uint64_t want,
                          uint64_t end, uint64_t unpub, uint64_t *was) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return -errno;
  uint64_t cur = *was = (uint64_t)st.st_size;
  if (cur >= want)
    return ftruncate(fd, (off_t)want) < 0 ? -errno : 0;
  uint64_t missing = want - cur;
  if (end < unpub || missing > end - unpub)
    return -ERANGE;
  int sfd = open(spath, O_RDONLY | O_CLOEXEC);
  if (sfd < 0)
    return -errno;
  int rc = ls_copy(sfd, end - missing, end, fd, cur);
  close(sfd);
  return rc;
}

/* restore: truncates the staging file to 0. 0 ok, -errno. */
static int ls_clear_staging(const char *spath) {
  int sfd = open(spath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (sfd < 0)
    return -errno;
  int rc = ls_fsync(sfd);
  close(sfd);
  return rc;
}

static const char *ls_restore_why(int rc) {
  if (rc == -ERANGE)
    return "the file is shorter than the checkpoint can complete";
  if (rc == -ENODATA)
    return "the staging file lacks the checkpoint's bytes";
  return uv_strerror(rc);
}

static int ls_restore(sl_sink_t *k, const uint8_t *state, size_t len) {
  const char *path = sl_cfg_str(k->cfg, "path");
  uint64_t want = 0, end = 0, unpub = 0, was = 0;
  if (!k->cfg->exactly_once)
    return 0; /* start truncates the file */
  if (state && len != LS_STATE_LEN) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': bad checkpoint state (%zu bytes)",
           k->cfg->name, len);
    return -1;
  }
  if (state) {
    want = ls_get_u64(state);
    end = ls_get_u64(state + 8);
    unpub = ls_get_u64(state + 16);
  }
  char *spath = path ? ls_staging_path(path) : NULL;
  int rc = -ENOMEM;
  int fd = spath ? open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
  if (spath && fd < 0)
    rc = -errno;
  if (fd >= 0)
    rc = ls_restore_len(fd, spath, want, end, unpub, &was);
  if (rc == 0)
    rc = ls_fsync(fd);
  if (rc == 0)
    rc = ls_clear_staging(spath);
  if (rc == 0)
    rc = ls_sync_dir(path);
  if (fd >= 0)
    close(fd);
  free(spath);
  if (rc < 0) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': cannot restore %s to %llu bytes: %s",
           k->cfg->name, path ? path : "(no path)", (unsigned long long)want,
           ls_restore_why(rc));
    return -1;
  }
  if (was != want)
    sl_log(SL_LOG_INFO, "sink", "'%s': restored %s to %llu bytes (from %llu)",
           k->cfg->name, path, (unsigned long long)want,
           (unsigned long long)was);
  return 0;
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
    .precommit = ls_precommit,
    .commit = ls_commit,
    .restore = ls_restore,
};
