/* sink_tcp.c - the `tcp` sink: one line per record, to a TCP server.
 *
 * Runs on the I/O thread. Owns the connection (a uv_tcp_t allocated per
 * attempt, freed when closed), the back-off and finish-deadline timers, the
 * rendered lines not yet handed to libuv, and the chunks handed to uv_write
 * whose callbacks have not yet reported them written.
 *
 * Connecting: at start, and again whenever the connection fails or is lost,
 * after a back-off of 100 ms doubling to 5 s (reset once a connection has
 * lasted 1 s), with one WARN line per failure. The pipeline runs on while
 * disconnected: lines wait, up to the 4 MiB limit, beyond which the sink is
 * busy and back-pressures its inputs (ready again below 1 MiB).
 *
 * Writing: lines are rendered into `wait`; a chunk of everything waiting is
 * handed to uv_write when libuv's write queue for the socket is empty
 * (uv_stream_get_write_queue_size), on flush, once 64 KiB wait, or as soon as
 * the previous chunk was written. So while the peer reads slowly, lines pile
 * up in one buffer and leave in large writes.
 *
 * At-least-once: a chunk is kept until its write callback reports it written
 * (handed to the kernel). When the connection breaks, the chunks not yet
 * reported written are put back in front of the waiting lines and sent
 * again on the next connection, so a line that was in flight may be
 * delivered twice (its first copy possibly cut short: the peer then sees a
 * partial line at the end of the old connection). Bytes the kernel accepted
 * but could not deliver before a reset are lost: TCP has no acknowledgement
 * the application can see.
 *
 * finish: waits until everything is written, reconnecting as needed, but
 * gives up after 10 s with an ERROR line. close: shuts the connection down
 * gracefully (pending writes first) and closes it.
 */
#include "endpoint.h"
#include "log.h"
#include "sink_render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS_WRITE_AT (64 * 1024)
#define TS_HIGH (4u << 20)
#define TS_LOW (1u << 20)
#define TS_BACKOFF_MIN 100
#define TS_BACKOFF_MAX 5000
#define TS_STABLE_MS 1000 /* a connection this old resets the back-off */
#define TS_FINISH_MS 10000

enum { TS_DOWN, TS_CONNECTING, TS_UP, TS_DROPPING };

typedef struct tsink_s tsink_t;

typedef struct tchunk_s {
  struct tchunk_s *next;
  tsink_t *t;
  uv_write_t req;
  int written;
  size_t len;
  uint8_t *data;
} tchunk_t;

struct tsink_s {
  sl_sink_t *k;
  struct sockaddr_storage addr;
  uv_tcp_t *tcp; /* the connection, NULL when none */
  uv_connect_t creq;
  uv_shutdown_t sreq;
  uv_timer_t retry, deadline;
  int state;
  uint64_t backoff_ms, up_since;
  sl_buf_t wait;          /* rendered lines not handed to uv_write */
  tchunk_t *head, *tail;  /* handed to uv_write, oldest first */
  size_t in_flight;       /* bytes in those chunks */
  int finishing, closing; /* finish / close were called */
  int pending;            /* handles whose close callback is due */
  sl_sink_cb finish_done, close_done;
  char rbuf[4096]; /* what the peer sends is read and dropped */
};

static void ts_connect(tsink_t *t);
static void ts_pump(tsink_t *t);
static void ts_maybe_freed(tsink_t *t);

static const char *ts_name(tsink_t *t) {
  return t->k->cfg->name;
}

static const char *ts_peer(tsink_t *t) {
  return sl_cfg_str(t->k->cfg, "connect");
}

static size_t ts_held(tsink_t *t) {
  return t->wait.len + t->in_flight;
}

static void ts_check_ready(tsink_t *t) {
  if (t->k->busy && ts_held(t) < TS_LOW)
    sl_sink_ready(t->k);
}

/* ---- finishing ---- */

static void ts_finished(tsink_t *t) {
  sl_sink_cb done = t->finish_done;
  t->finish_done = NULL;
  uv_timer_stop(&t->deadline);
  if (done)
    done(t->k);
}

static void ts_check_finished(tsink_t *t) {
  if (t->finishing && ts_held(t) == 0)
    ts_finished(t);
}

static void ts_on_deadline(uv_timer_t *h) {
  tsink_t *t = h->data;
  sl_log(SL_LOG_ERROR, "sink",
         "'%s': gave up after %d s: %zu bytes not "
         "written to %s",
         ts_name(t), TS_FINISH_MS / 1000, ts_held(t), ts_peer(t));
  t->wait.len = 0;
  ts_finished(t);
}

/* ---- chunks ---- */

static void ts_chunk_free(tsink_t *t, tchunk_t *c) {
  t->in_flight -= c->len;
  free(c->data);
  free(c);
}

/* Drops the written chunks at the head (writes complete in order). */
static void ts_pop_written(tsink_t *t) {
  while (t->head && t->head->written) {
    tchunk_t *c = t->head;
    t->head = c->next;
    ts_chunk_free(t, c);
  }
  if (!t->head)
    t->tail = NULL;
}

/* The connection is gone: the unwritten chunks go back in front of `wait`. */
static void ts_requeue(tsink_t *t) {
  sl_buf_t b;
  sl_buf_init(&b);
  size_t lost = 0;
  for (tchunk_t *c = t->head; c; c = c->next)
    if (!c->written && sl_buf_append(&b, c->data, c->len) < 0)
      lost += c->len;
  while (t->head) {
    tchunk_t *c = t->head;
    t->head = c->next;
    ts_chunk_free(t, c);
  }
  t->tail = NULL;
  if (b.len > 0 && sl_buf_append(&b, t->wait.data, t->wait.len) == 0) {
    sl_buf_free(&t->wait);
    t->wait = b;
  } else {
    lost += b.len;
    sl_buf_free(&b);
  }
  if (lost)
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory: %zu bytes dropped",
           ts_name(t), lost);
}

/* ---- the connection ---- */

static void ts_on_retry(uv_timer_t *h) {
  ts_connect(h->data);
}

static void ts_schedule(tsink_t *t) {
  if (t->closing)
    return;
  uv_timer_start(&t->retry, ts_on_retry, t->backoff_ms, 0);
  t->backoff_ms *= 2;
  if (t->backoff_ms > TS_BACKOFF_MAX)
    t->backoff_ms = TS_BACKOFF_MAX;
}

static void ts_on_conn_closed(uv_handle_t *h) {
  tsink_t *t = h->data;
  free(h);
  t->tcp = NULL;
  t->state = TS_DOWN;
  t->pending--;
  ts_requeue(t);
  if (t->closing)
    ts_maybe_freed(t);
  else
    ts_schedule(t);
}

/* Closes the connection; the close callback requeues and reconnects. */
static void ts_drop(tsink_t *t) {
  if (!t->tcp || t->state == TS_DROPPING)
    return;
  if (t->state == TS_UP && uv_now(t->k->loop) - t->up_since >= TS_STABLE_MS)
    t->backoff_ms = TS_BACKOFF_MIN;
  t->state = TS_DROPPING;
  t->pending++;
  uv_close((uv_handle_t *)t->tcp, ts_on_conn_closed);
}

static void ts_lost(tsink_t *t, int err) {
  if (t->state != TS_UP)
    return;
  sl_log(SL_LOG_WARN, "sink", "'%s': connection to %s lost: %s; reconnecting",
         ts_name(t), ts_peer(t),
         err == UV_EOF ? "closed by peer" : uv_strerror(err));
  ts_drop(t);
}

static void ts_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  tsink_t *t = h->data;
  (void)hint;
  *buf = uv_buf_init(t->rbuf, sizeof t->rbuf);
}

static void ts_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n < 0)
    ts_lost(st->data, (int)n);
}

/* A connect failed (status): WARN, drop the handle, retry after back-off. */
static void ts_connect_failed(tsink_t *t, int status) {
  sl_log(SL_LOG_WARN, "sink",
         "'%s': cannot connect to %s: %s (retry in %llu ms)", ts_name(t),
         ts_peer(t), uv_strerror(status), (unsigned long long)t->backoff_ms);
  ts_drop(t);
}

static void ts_on_connect(uv_connect_t *req, int status) {
  tsink_t *t = req->data;
  if (status == UV_ECANCELED)
    return; /* closed while connecting */
  if (status < 0) {
    ts_connect_failed(t, status);
    return;
  }
  t->state = TS_UP;
  t->up_since = uv_now(t->k->loop);
  sl_log(SL_LOG_INFO, "sink", "'%s': connected to %s", ts_name(t), ts_peer(t));
  uv_tcp_nodelay(t->tcp, 1);
  uv_tcp_keepalive(t->tcp, 1, 60);
  int rc = uv_read_start((uv_stream_t *)t->tcp, ts_alloc, ts_on_read);
  if (rc < 0) {
    ts_lost(t, rc);
    return;
  }
  ts_pump(t);
}

static void ts_connect(tsink_t *t) {
  if (t->tcp || t->closing)
    return;
  t->tcp = malloc(sizeof *t->tcp);
  if (!t->tcp) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", ts_name(t));
    ts_schedule(t);
    return;
  }
  uv_tcp_init(t->k->loop, t->tcp);
  t->tcp->data = t;
  t->creq.data = t;
  t->state = TS_CONNECTING;
  int rc = uv_tcp_connect(&t->creq, t->tcp, (struct sockaddr *)&t->addr,
                          ts_on_connect);
  if (rc < 0)
    ts_connect_failed(t, rc);
}

/* ---- writing ---- */

static void ts_on_write(uv_write_t *req, int status) {
  tchunk_t *c = req->data;
  tsink_t *t = c->t;
  if (status < 0) {
    if (status != UV_ECANCELED)
      ts_lost(t, status);
    return; /* the chunk is requeued when the connection is closed */
  }
  c->written = 1;
  ts_pop_written(t);
  ts_check_ready(t);
  ts_pump(t);
}

/* Hands everything waiting to uv_write when libuv holds nothing unwritten. */
static void ts_send(tsink_t *t) {
  uv_stream_t *st = (uv_stream_t *)t->tcp;
  if (t->wait.len == 0 || uv_stream_get_write_queue_size(st) > 0)
    return;
  tchunk_t *c = calloc(1, sizeof *c);
  if (!c)
    return; /* retried on the next flush */
  c->t = t;
  c->data = sl_buf_take(&t->wait, &c->len);
  c->req.data = c;
  t->in_flight += c->len;
  if (t->tail)
    t->tail->next = c;
  else
    t->head = c;
  t->tail = c;
  uv_buf_t b = uv_buf_init((char *)c->data, (unsigned)c->len);
  int rc = uv_write(&c->req, st, &b, 1, ts_on_write);
  if (rc < 0)
    ts_lost(t, rc); /* the chunk goes back to `wait` on close */
}

static void ts_pump(tsink_t *t) {
  if (t->state == TS_UP)
    ts_send(t);
  ts_check_finished(t);
}

/* ---- the vtable ---- */

static int ts_start(sl_sink_t *k) {
  struct sockaddr_storage addr;
  if (!sl_cfg_str(k->cfg, "connect") ||
      sl_endpoint_parse_addr(sl_cfg_str(k->cfg, "connect"), &addr)) {
    sl_log(SL_LOG_ERROR, "sink",
           "'%s': bad connect address \"%s\" (want "
           "HOST:PORT)",
           k->cfg->name,
           sl_cfg_str(k->cfg, "connect") ? sl_cfg_str(k->cfg, "connect") : "");
    return -1;
  }
  tsink_t *t = calloc(1, sizeof *t);
  if (!t) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", k->cfg->name);
    return -1;
  }
  t->k = k;
  t->addr = addr;
  t->backoff_ms = TS_BACKOFF_MIN;
  sl_buf_init(&t->wait);
  uv_timer_init(k->loop, &t->retry);
  uv_timer_init(k->loop, &t->deadline);
  t->retry.data = t->deadline.data = t;
  k->impl = t;
  ts_connect(t);
  return 0;
}

static int ts_write(sl_sink_t *k, const uint8_t *data, size_t len) {
  tsink_t *t = k->impl;
  uint64_t n;
  if (sl_sink_render(&t->wait, data, len, &n) < 0)
    return -1;
  if (t->wait.len >= TS_WRITE_AT)
    ts_pump(t);
  if (ts_held(t) > TS_HIGH)
    k->busy = 1;
  return 0;
}

static void ts_flush(sl_sink_t *k) {
  if (k->impl)
    ts_pump(k->impl);
}

static void ts_finish(sl_sink_t *k, sl_sink_cb done) {
  tsink_t *t = k->impl;
  if (!t) {
    done(k);
    return;
  }
  t->finishing = 1;
  t->finish_done = done;
  uv_timer_start(&t->deadline, ts_on_deadline, TS_FINISH_MS, 0);
  ts_pump(t);
}

static void ts_maybe_freed(tsink_t *t) {
  if (t->pending > 0)
    return;
  sl_sink_t *k = t->k;
  sl_sink_cb done = t->close_done;
  ts_requeue(t); /* frees the chunks */
  sl_buf_free(&t->wait);
  free(t);
  done(k);
}

static void ts_on_timer_closed(uv_handle_t *h) {
  tsink_t *t = h->data;
  t->pending--;
  ts_maybe_freed(t);
}

static void ts_on_shutdown(uv_shutdown_t *req, int status) {
  tsink_t *t = req->data;
  (void)status; /* closed either way; pending was counted at shutdown */
  uv_close((uv_handle_t *)t->tcp, ts_on_conn_closed);
}

/* Closing: a connection that is up with nothing left in libuv's queue is
 * shut down first (FIN after the kernel's buffer), then closed. With writes
 * still queued (a peer that stopped reading) it is closed at once, so that
 * closing never waits on the peer. */
static void ts_close_conn(tsink_t *t) {
  uv_stream_t *st = (uv_stream_t *)t->tcp;
  if (t->state == TS_UP && uv_stream_get_write_queue_size(st) == 0) {
    t->sreq.data = t;
    uv_read_stop(st);
    if (uv_shutdown(&t->sreq, st, ts_on_shutdown) == 0) {
      t->state = TS_DROPPING; /* ts_on_shutdown closes it */
      t->pending++;           /* until the handle's close callback */
      return;
    }
  }
  ts_drop(t);
}

static void ts_close(sl_sink_t *k, sl_sink_cb done) {
  tsink_t *t = k->impl;
  k->impl = NULL;
  if (!t) {
    done(k);
    return;
  }
  t->closing = 1;
  t->close_done = done;
  t->pending += 2;
  uv_close((uv_handle_t *)&t->retry, ts_on_timer_closed);
  uv_close((uv_handle_t *)&t->deadline, ts_on_timer_closed);
  if (t->tcp)
    ts_close_conn(t);
}

const sl_sink_vt_t sl_sink_tcp_vt = {
    .kind = "tcp",
    .start = ts_start,
    .write = ts_write,
    .flush = ts_flush,
    .finish = ts_finish,
    .close = ts_close,
};
