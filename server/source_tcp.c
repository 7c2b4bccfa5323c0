/* source_tcp.c - the `tcp` source: newline-delimited records from clients.
 *
 * Runs on the I/O thread. Owns the listening socket, every client
 * connection (each with its own line splitter, so a partial line waits for
 * the rest of its own connection) and one 64 KiB read buffer shared by all
 * clients: libuv runs one read callback at a time and each is split before
 * it returns, so one buffer is enough however many clients there are.
 *
 * Clients come and go; the source never ends by itself, only `stop` ends it
 * (closing the listener and every client). A line longer than max_line is
 * rejected (sl_source_reject names the client) and that client carries on
 * with its next line. A client that closes cleanly has its last line
 * delivered even without "\n"; after a reset a partial line is dropped.
 *
 * Back-pressure: pause stops reading on every client (the kernel buffers
 * fill and the clients' writes block); new clients are still accepted but
 * not read until resume.
 */
#include "endpoint.h"
#include "lines.h"
#include "log.h"
#include "luaapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TCP_CHUNK (64 * 1024)
#define TCP_BACKLOG 128

typedef struct tcp_src_s tcp_src_t;

typedef struct tcp_client_s {
  struct tcp_client_s *prev, *next;
  tcp_src_t *src;
  uv_tcp_t tcp;
  sl_lines_t lines;
  int reading;
  char peer[64]; /* "IP:PORT", for log lines */
} tcp_client_t;

struct tcp_src_s {
  sl_source_t *s;
  uv_tcp_t listener;
  tcp_client_t *clients; /* open clients; closing ones are unlinked */
  int listening;         /* the listener is open */
  int closing;           /* close was called: free once pending is 0 */
  int pending;           /* handles whose close callback is due */
  sl_source_cb done;     /* NULL when start failed */
  double read_ms;        /* when the chunk being split was read */
  char buf[TCP_CHUNK];
};

static const char *tcp_name(tcp_src_t *t) {
  return t->s->cfg->name;
}

/* "IP:PORT" or "[IP6]:PORT" of a socket address. */
static void tcp_format(const struct sockaddr_storage *ss, char *out, size_t n) {
  char ip[64] = "?";
  int port = 0;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(out, n, "[%s]:%d", ip, port);
    return;
  }
  const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
  if (ss->ss_family == AF_INET) {
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
  }
  snprintf(out, n, "%s:%d", ip, port);
}

/* ---- closing ---- */

static void tcp_maybe_freed(tcp_src_t *t) {
  if (!t->closing || t->pending > 0)
    return;
  sl_source_t *s = t->s;
  sl_source_cb done = t->done;
  free(t);
  if (done)
    done(s);
}

static void tcp_on_client_closed(uv_handle_t *h) {
  tcp_client_t *c = h->data;
  tcp_src_t *t = c->src;
  sl_lines_free(&c->lines);
  free(c);
  t->pending--;
  tcp_maybe_freed(t);
}

static void tcp_client_close(tcp_client_t *c) {
  tcp_src_t *t = c->src;
  if (c->prev)
    c->prev->next = c->next;
  else
    t->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  t->pending++;
  uv_close((uv_handle_t *)&c->tcp, tcp_on_client_closed);
}

static void tcp_on_listener_closed(uv_handle_t *h) {
  tcp_src_t *t = h->data;
  t->pending--;
  tcp_maybe_freed(t);
}

/* Closes the listener and every client. */
static void tcp_close_all(tcp_src_t *t) {
  while (t->clients)
    tcp_client_close(t->clients);
  if (t->listening) {
    t->listening = 0;
    t->pending++;
    uv_close((uv_handle_t *)&t->listener, tcp_on_listener_closed);
  }
}

/* ---- reading clients ---- */

static void tcp_on_line(void *ud, const char *line, size_t n) {
  tcp_client_t *c = ud;
  sl_source_emit(c->src->s, line, n, c->src->read_ms);
}

static void tcp_on_reject(void *ud, size_t n) {
  tcp_client_t *c = ud;
  char why[160];
  snprintf(why, sizeof why, "line of %zu bytes exceeds max_line %zu from %s", n,
           c->lines.max_line, c->peer);
  sl_source_reject(c->src->s, why);
}

static void tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  tcp_client_t *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->src->buf, TCP_CHUNK);
}

static void tcp_client_stop(tcp_client_t *c) {
  if (c->reading)
    uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

static void tcp_pause_all(tcp_src_t *t) {
  for (tcp_client_t *c = t->clients; c; c = c->next)
    tcp_client_stop(c);
}

/* The client went away: EOF delivers its last line, an error drops it. */
static void tcp_client_gone(tcp_client_t *c, ssize_t err) {
  tcp_src_t *t = c->src;
  if (err == UV_EOF) {
    t->read_ms = sl_now_ms();
    sl_lines_finish(&c->lines);
    sl_source_flush(t->s);
    sl_log(SL_LOG_DEBUG, "source", "'%s': %s disconnected", tcp_name(t),
           c->peer);
  } else {
    sl_log(SL_LOG_INFO, "source", "'%s': %s: %s", tcp_name(t), c->peer,
           uv_strerror((int)err));
  }
  tcp_client_close(c);
}

static void tcp_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  tcp_client_t *c = st->data;
  tcp_src_t *t = c->src;
  (void)buf;
  if (n < 0) {
    tcp_client_gone(c, n);
    return;
  }
  if (n == 0 || t->s->ended)
    return;
  t->read_ms = sl_now_ms();
  if (sl_lines_feed(&c->lines, t->buf, (size_t)n) < 0)
    sl_log(SL_LOG_ERROR, "source",
           "'%s': out of memory: a line from %s was "
           "dropped",
           tcp_name(t), c->peer);
  sl_source_flush(t->s);
  if (t->s->paused)
    tcp_pause_all(t);
}

static void tcp_client_start(tcp_client_t *c) {
  if (c->reading || c->src->s->paused || c->src->s->ended)
    return;
  int rc = uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_on_read);
  if (rc < 0) {
    tcp_client_gone(c, rc);
    return;
  }
  c->reading = 1;
}

/* ---- accepting ---- */

static tcp_client_t *tcp_client_new(tcp_src_t *t) {
  tcp_client_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->src = t;
  size_t max = (size_t)sl_cfg_num(t->s->cfg, "max_line", SL_LINES_DEFAULT_MAX);
  sl_lines_init(&c->lines, max, tcp_on_line, tcp_on_reject, c);
  uv_tcp_init(t->s->loop, &c->tcp);
  c->tcp.data = c;
  c->next = t->clients;
  if (t->clients)
    t->clients->prev = c;
  t->clients = c;
  return c;
}

static void tcp_on_connection(uv_stream_t *server, int status) {
  tcp_src_t *t = server->data;
  if (status < 0) {
    sl_log(SL_LOG_WARN, "source", "'%s': accept: %s", tcp_name(t),
           uv_strerror(status));
    return;
  }
  tcp_client_t *c = tcp_client_new(t);
  if (!c) {
    /* The connection stays queued in libuv, which accepts no more until
     * uv_accept: there is no handle to take it into. */
    sl_log(SL_LOG_ERROR, "source",
           "'%s': out of memory: no longer accepting "
           "clients",
           tcp_name(t));
    return;
  }
  int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
  if (rc < 0) {
    sl_log(SL_LOG_WARN, "source", "'%s': accept: %s", tcp_name(t),
           uv_strerror(rc));
    tcp_client_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len);
  tcp_format(&ss, c->peer, sizeof c->peer);
  sl_log(SL_LOG_DEBUG, "source", "'%s': %s connected", tcp_name(t), c->peer);
  tcp_client_start(c);
}

/* ---- the source ---- */

static int tcp_listen(tcp_src_t *t, const struct sockaddr_storage *addr) {
  int rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&t->listener, TCP_BACKLOG, tcp_on_connection);
  if (rc < 0) {
    sl_log(SL_LOG_ERROR, "source", "'%s': cannot listen on %s: %s", tcp_name(t),
           sl_cfg_str(t->s->cfg, "listen"), uv_strerror(rc));
    return -1;
  }
  struct sockaddr_storage ss;
  char where[80];
  int len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len);
  tcp_format(&ss, where, sizeof where);
  sl_log(SL_LOG_INFO, "source", "'%s': listening on %s", tcp_name(t), where);
  return 0;
}

static int tcp_start(sl_source_t *s) {
  struct sockaddr_storage addr;
  if (!sl_cfg_str(s->cfg, "listen") ||
      sl_endpoint_parse_addr(sl_cfg_str(s->cfg, "listen"), &addr) < 0) {
    sl_log(SL_LOG_ERROR, "source",
           "'%s': bad listen address \"%s\" (want "
           "HOST:PORT)",
           s->cfg->name,
           sl_cfg_str(s->cfg, "listen") ? sl_cfg_str(s->cfg, "listen") : "");
    return -1;
  }
  tcp_src_t *t = calloc(1, sizeof *t);
  if (!t) {
    sl_log(SL_LOG_ERROR, "source", "'%s': out of memory", s->cfg->name);
    return -1;
  }
  t->s = s;
  uv_tcp_init(s->loop, &t->listener);
  t->listener.data = t;
  t->listening = 1;
  if (tcp_listen(t, &addr) < 0) {
    t->closing = 1; /* freed when the listener is closed; no done */
    tcp_close_all(t);
    return -1;
  }
  s->impl = t;
  return 0;
}

static void tcp_pause(sl_source_t *s) {
  if (s->impl)
    tcp_pause_all(s->impl);
}

static void tcp_resume(sl_source_t *s) {
  tcp_src_t *t = s->impl;
  tcp_client_t *c = t ? t->clients : NULL;
  while (c) {
    tcp_client_t *next = c->next; /* c may close if reading fails */
    tcp_client_start(c);
    c = next;
  }
}

static void tcp_stop(sl_source_t *s) {
  if (s->impl)
    tcp_close_all(s->impl);
  if (!s->ended)
    sl_source_end(s, 0);
}

static void tcp_close(sl_source_t *s, sl_source_cb done) {
  tcp_src_t *t = s->impl;
  s->impl = NULL;
  if (!t) {
    done(s);
    return;
  }
  t->closing = 1;
  t->done = done;
  tcp_close_all(t);
  tcp_maybe_freed(t);
}

const sl_source_vt_t sl_source_tcp_vt = {
    .kind = "tcp",
    .start = tcp_start,
    .pause = tcp_pause,
    .resume = tcp_resume,
    .stop = tcp_stop,
    .close = tcp_close,
};
