/* admin.c - the admin HTTP server (see admin.h).
 *
 * One uv_tcp_t listener on the I/O loop; each connection has its own
 * http_parser, reads one request, answers it and closes. A state query is
 * answered asynchronously: the request goes to the owning worker's message
 * queue (sl_worker_query) and its reply comes back through a mutex-guarded
 * queue here (sl_admin_reply) and the I/O thread's wake handle.
 */
#include "admin.h"

#include "checkpoint.h"
#include "confwatch.h"
#include "log.h"
#include "luaapi.h"
#include "metrics.h"
#include "sluice.h"
#include "status.h"
#include "text.h"
#include "watch.h"
#include "worker.h"

#include <http_parser.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_ADMIN_MAX_HEAD (16 * 1024)   /* request line + headers */
#define SL_ADMIN_MAX_BODY (1024 * 1024) /* body */
#define SL_ADMIN_MAX_CONNS 64
#define SL_ADMIN_TIMEOUT_MS 10000 /* a request must arrive and be answered */

/* ---- connections ---- */

typedef struct sl_conn_s {
  struct sl_conn_s *next, *prev;
  struct sl_admin_s *admin;
  uv_tcp_t tcp;
  uv_timer_t timer;
  http_parser parser;
  sl_text_t url;
  size_t head_bytes, body_bytes;
  int in_head;   /* still in the request line and headers */
  int complete;  /* on_message_complete ran */
  int answered;  /* a response is being written (or the conn is closing) */
  int closing;   /* handles closing; 2 when both are closed */
  uint64_t wait; /* state query in flight */
  uint64_t ckpt; /* POST /checkpoint: waiting for this checkpoint */
  char *op, *key;
  int inst;
  uv_write_t wr;
  sl_text_t out;
} sl_conn_t;

typedef struct sl_areply_s {
  struct sl_areply_s *next;
  uint64_t seq;
  int status;
  char *text;
} sl_areply_t;

typedef struct sl_admin_s {
  sl_core_t *c;
  uv_tcp_t listener;
  int listening;
  sl_conn_t *conns;
  int n_conns;
  uint64_t seq;
  uv_mutex_t mu;
  sl_areply_t *replies; /* (mu) */
  http_parser_settings settings;
} sl_admin_t;

static void conn_closed(uv_handle_t *h) {
  sl_conn_t *k = h->data;
  if (++k->closing < 3)
    return;
  sl_text_free(&k->url);
  sl_text_free(&k->out);
  free(k->op);
  free(k->key);
  free(k);
}

static void conn_close(sl_conn_t *k) {
  if (k->closing)
    return;
  sl_admin_t *a = k->admin;
  if (k->prev)
    k->prev->next = k->next;
  else
    a->conns = k->next;
  if (k->next)
    k->next->prev = k->prev;
  a->n_conns--;
  k->closing = 1;
  uv_close((uv_handle_t *)&k->tcp, conn_closed);
  uv_close((uv_handle_t *)&k->timer, conn_closed);
}

static void on_written(uv_write_t *wr, int status) {
  (void)status;
  conn_close(wr->data);
}

static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 202:
    return "Accepted";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Payload Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* Sends one response and closes the connection once it is written. */
static void respond(sl_conn_t *k, int status, const char *type,
                    const char *allow, const char *body, size_t len) {
  if (k->answered || k->closing)
    return;
  k->answered = 1;
  uv_read_stop((uv_stream_t *)&k->tcp);
  sl_text_t *o = &k->out;
  sl_text_printf(o,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n",
                 status, reason(status), type, len);
  if (allow)
    sl_text_printf(o, "Allow: %s\r\n", allow);
  SL_TEXT_LIT(o, "\r\n");
  sl_text_add(o, body, len);
  if (o->oom) {
    conn_close(k);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)o->buf.data, (unsigned)o->buf.len);
  k->wr.data = k;
  if (uv_write(&k->wr, (uv_stream_t *)&k->tcp, &b, 1, on_written))
    conn_close(k);
}

static void respond_text(sl_conn_t *k, int status, const char *text) {
  respond(k, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static void respond_json(sl_conn_t *k, int status, sl_text_t *s) {
  if (s->oom) {
    respond_text(k, 500, "out of memory\n");
  } else {
    SL_TEXT_LIT(s, "\n");
    respond(k, status, "application/json", NULL, sl_text_str(s), s->buf.len);
  }
  sl_text_free(s);
}

static void respond_error(sl_conn_t *k, int status, const char *msg) {
  sl_text_t s = {0};
  SL_TEXT_LIT(&s, "{\"error\":");
  sl_text_jsonz(&s, msg);
  SL_TEXT_LIT(&s, "}");
  respond_json(k, status, &s);
}

/* ---- endpoints ---- */

static void on_conn_timeout(uv_timer_t *t);
static void get_health(sl_conn_t *k) {
  sl_core_t *c = k->admin->c;
  if (sl_status_running(c)) {
    respond_text(k, 200, "ok\n");
  } else {
    char msg[32];
    snprintf(msg, sizeof msg, "%s\n", sl_status_state(c));
    respond_text(k, 503, msg);
  }
}

static void get_metrics(sl_conn_t *k) {
  sl_text_t s = {0};
  sl_metrics_render(k->admin->c, &s);
  if (s.oom)
    respond_text(k, 500, "out of memory\n");
  else
    respond(k, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
            sl_text_str(&s), s.buf.len);
  sl_text_free(&s);
}

static void get_status(sl_conn_t *k) {
  sl_text_t s = {0};
  sl_status_render(k->admin->c, &s);
  respond_json(k, 200, &s);
}

/* Answers a POST /checkpoint once its checkpoint is decided: 200 with the
 * id, duration and size; 500 with why it failed. 0 while undecided. */
static int answer_checkpoint(sl_conn_t *k) {
  sl_checkpoint_outcome_t o;
  int state = sl_checkpoint_outcome(k->admin->c, k->ckpt, &o);
  if (state == 0)
    return 0;
  sl_text_t s = {0};
  sl_text_printf(&s, "{\"id\":%" PRIu64, k->ckpt);
  if (state > 0) {
    sl_text_printf(&s,
                   ",\"status\":\"completed\",\"duration_ms\":%.0f"
                   ",\"bytes\":%" PRIu64 "}",
                   o.duration_ms, o.bytes);
  } else {
    SL_TEXT_LIT(&s, ",\"status\":\"failed\",\"error\":");
    sl_text_jsonz(&s, o.why);
    SL_TEXT_LIT(&s, "}");
  }
  k->ckpt = 0;
  respond_json(k, state > 0 ? 200 : 500, &s);
  return 1;
}

/* POST /checkpoint: starts one (or joins the one in progress) and answers
 * when it is stored; ?wait=false answers 202 at once. */
static void post_checkpoint(sl_conn_t *k) {
  sl_core_t *c = k->admin->c;
  if (c->restoring) {
    respond_error(k, 503, "restoring");
    return;
  }
  if (!sl_checkpoint_periodic(c)) {
    respond_error(k, 409,
                  "checkpointing is off (the conf has no checkpoint block)");
    return;
  }
  uint64_t id = sl_checkpoint_trigger(c);
  if (!id) {
    respond_error(k, 503,
                  "no checkpoint can be taken now (stopping, failed "
                  "or every source ended)");
    return;
  }
  sl_log(SL_LOG_INFO, "admin", "POST /checkpoint: checkpoint %" PRIu64, id);
  const char *q = strchr(sl_text_str(&k->url), '?');
  if (q && (strstr(q, "wait=false") || strstr(q, "wait=0"))) {
    sl_text_t s = {0};
    sl_text_printf(&s, "{\"id\":%" PRIu64 ",\"status\":\"started\"}", id);
    respond_json(k, 202, &s);
    return;
  }
  k->ckpt = id;
  double limit = c->plan->ckpt_timeout_ms + 5000;
  uv_timer_start(
      &k->timer, on_conn_timeout,
      limit > SL_ADMIN_TIMEOUT_MS ? (uint64_t)limit : SL_ADMIN_TIMEOUT_MS, 0);
  answer_checkpoint(k);
}

static void post_reload(sl_conn_t *k) {
  sl_core_t *c = k->admin->c;
  if (!sl_status_running(c)) {
    respond_error(k, 503, "not running");
    return;
  }
  sl_watch_reload_all(c, "POST /reload");
  sl_confwatch_check(c, 0);
  sl_text_t s = {0};
  SL_TEXT_LIT(&s, "{\"reload\":\"started\"}");
  respond_json(k, 202, &s);
}

static int unhex(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) into a new string (*len); NULL if malformed. */
static char *pct_decode(const char *s, size_t n, size_t *len) {
  char *out = malloc(n + 1);
  size_t j = 0;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      int hi = i + 2 < n ? unhex((unsigned char)s[i + 1]) : -1;
      int lo = i + 2 < n ? unhex((unsigned char)s[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        free(out);
        return NULL;
      }
      out[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[j++] = s[i];
    }
  }
  out[j] = 0;
  *len = j;
  return out;
}

static void get_state(sl_conn_t *k, const char *rest, size_t n) {
  sl_admin_t *a = k->admin;
  sl_core_t *c = a->c;
  const sl_plan_t *p = c->plan;
  const char *slash = memchr(rest, '/', n);
  if (!slash || slash == rest || slash + 1 == rest + n) {
    respond_error(k, 404, "use /state/OPERATOR/KEY");
    return;
  }
  size_t op_len, key_len;
  char *op = pct_decode(rest, (size_t)(slash - rest), &op_len);
  char *key = pct_decode(slash + 1, (size_t)(rest + n - slash - 1), &key_len);
  if (!op || !key) {
    free(op);
    free(key);
    respond_error(k, 400, "bad percent-encoding in the path");
    return;
  }
  k->op = op;
  k->key = key;
  const sl_plan_node_t *node = NULL;
  for (int i = 0; i < p->n_nodes; i++)
    if (p->nodes[i].type == SL_NODE_OPERATOR &&
        !strcmp(p->nodes[i].cfg.name, op))
      node = &p->nodes[i];
  if (!node) {
    respond_error(k, 404, "no such operator");
    return;
  }
  if (!sl_status_running(c) || !c->workers) {
    respond_error(k, 503, "not running");
    return;
  }
  int idx = 0;
  if (node->grouping == SL_GROUP_KEY) {
    uint32_t kg = sl_hash_bytes(key, key_len) % (uint32_t)p->max_parallelism;
    idx = (int)((int64_t)kg * node->parallelism / p->max_parallelism);
  } else if (node->parallelism > 1) {
    respond_error(k, 409,
                  "the operator is not key-grouped: a key's state may "
                  "be on any of its instances");
    return;
  }
  int gid = node->first_gid + idx;
  k->inst = idx;
  k->wait = ++a->seq;
  if (sl_worker_query(c->workers[p->insts[gid].thread], gid, k->wait, key,
                      key_len)) {
    k->wait = 0;
    respond_error(k, 500, "out of memory");
  }
}

static void route(sl_conn_t *k) {
  const char *url = sl_text_str(&k->url);
  size_t n = strcspn(url, "?#");
  int m = k->parser.method;
  struct {
    const char *path;
    int method;
    void (*fn)(sl_conn_t *);
  } routes[] = {
      {"/health", HTTP_GET, get_health},
      {"/metrics", HTTP_GET, get_metrics},
      {"/status", HTTP_GET, get_status},
      {"/checkpoint", HTTP_POST, post_checkpoint},
      {"/reload", HTTP_POST, post_reload},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    if (strlen(routes[i].path) != n || memcmp(routes[i].path, url, n))
      continue;
    if (m != routes[i].method) {
      const char *allow = routes[i].method == HTTP_GET ? "GET" : "POST";
      respond(k, 405, "text/plain; charset=utf-8", allow,
              "method not allowed\n", 19);
      return;
    }
    routes[i].fn(k);
    return;
  }
  if (n > 7 && !memcmp(url, "/state/", 7)) {
    if (m != HTTP_GET) {
      respond(k, 405, "text/plain; charset=utf-8", "GET",
              "method not allowed\n", 19);
      return;
    }
    get_state(k, url + 7, n - 7);
    return;
  }
  respond_text(k, 404, "not found\n");
}

/* ---- parsing ---- */

static int on_url(http_parser *hp, const char *at, size_t len) {
  sl_conn_t *k = hp->data;
  sl_text_add(&k->url, at, len);
  return k->url.oom;
}

static int on_headers_complete(http_parser *hp) {
  sl_conn_t *k = hp->data;
  k->in_head = 0;
  if (hp->content_length != ULLONG_MAX &&
      hp->content_length > SL_ADMIN_MAX_BODY) {
    respond_text(k, 413, "request body too large\n");
    return -1;
  }
  return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len) {
  sl_conn_t *k = hp->data;
  (void)at;
  k->body_bytes += len; /* no endpoint reads a body: counted, not kept */
  if (k->body_bytes > SL_ADMIN_MAX_BODY) {
    respond_text(k, 413, "request body too large\n");
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *hp) {
  sl_conn_t *k = hp->data;
  k->complete = 1;
  http_parser_pause(hp, 1); /* one request per connection */
  return 0;
}

static void bad_request(sl_conn_t *k, const char *why) {
  char msg[160];
  snprintf(msg, sizeof msg, "bad request: %s\n", why);
  respond_text(k, 400, msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char slab[16384]; /* the I/O thread's; consumed before the next read */
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  sl_conn_t *k = st->data;
  if (k->answered || k->closing || k->complete)
    return;
  if (nread < 0) {
    if (nread == UV_EOF) {
      http_parser_execute(&k->parser, &k->admin->settings, NULL, 0);
      if (!k->complete && !k->answered)
        bad_request(k, "the request ended early");
    } else {
      conn_close(k);
    }
    return;
  }
  if (nread == 0)
    return;
  size_t n = (size_t)nread, off = 0;
  while (off < n) {
    size_t chunk = n - off;
    if (k->in_head) { /* parse no more head than the bound allows */
      size_t room = SL_ADMIN_MAX_HEAD - k->head_bytes;
      if (chunk > room)
        chunk = room;
    }
    size_t done = http_parser_execute(&k->parser, &k->admin->settings,
                                      buf->base + off, chunk);
    if (k->in_head)
      k->head_bytes += done;
    off += done;
    if (k->answered)
      return;
    if (k->complete) {
      uv_read_stop(st);
      if (k->parser.upgrade)
        bad_request(k, "upgrade is not supported");
      else
        route(k);
      return;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&k->parser);
    if (e != HPE_OK) {
      bad_request(k, http_errno_description(e));
      return;
    }
    if (k->in_head && k->head_bytes >= SL_ADMIN_MAX_HEAD) {
      bad_request(k, "request line and headers over 16 KiB");
      return;
    }
    if (done < chunk) {
      bad_request(k, "unparsed bytes");
      return;
    }
  }
}

static void on_conn_timeout(uv_timer_t *t) {
  sl_conn_t *k = t->data;
  if (k->wait || k->complete)
    respond_error(k, 503, "timed out waiting for the answer");
  else
    respond_text(k, 408, "request timeout\n");
}

static void on_connection(uv_stream_t *server, int status) {
  sl_admin_t *a = server->data;
  if (status < 0)
    return;
  sl_conn_t *k = calloc(1, sizeof *k);
  if (!k)
    return;
  k->admin = a;
  uv_tcp_init(&a->c->loop, &k->tcp);
  uv_timer_init(&a->c->loop, &k->timer);
  k->tcp.data = k->timer.data = k;
  k->parser.data = k;
  k->in_head = 1;
  http_parser_init(&k->parser, HTTP_REQUEST);
  k->parser.data = k;
  k->next = a->conns;
  if (a->conns)
    a->conns->prev = k;
  a->conns = k;
  a->n_conns++;
  if (uv_accept(server, (uv_stream_t *)&k->tcp) ||
      a->n_conns > SL_ADMIN_MAX_CONNS) {
    conn_close(k);
    return;
  }
  uv_timer_start(&k->timer, on_conn_timeout, SL_ADMIN_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
}

/* ---- state query replies ---- */

void sl_admin_reply(sl_core_t *c, uint64_t seq, int status, const char *text) {
  sl_admin_t *a = c->admin;
  if (!a)
    return;
  sl_areply_t *r = calloc(1, sizeof *r);
  if (!r)
    return; /* the request times out */
  r->seq = seq;
  r->status = status;
  r->text = text ? strdup(text) : NULL;
  uv_mutex_lock(&a->mu);
  r->next = a->replies;
  a->replies = r;
  uv_mutex_unlock(&a->mu);
  uv_async_send(&c->wake);
}

static void answer_state(sl_conn_t *k, sl_areply_t *r) {
  sl_text_t s = {0};
  if (r->status == 200 && r->text) {
    SL_TEXT_LIT(&s, "{\"operator\":");
    sl_text_jsonz(&s, k->op);
    SL_TEXT_LIT(&s, ",\"key\":");
    sl_text_jsonz(&s, k->key);
    sl_text_printf(&s, ",\"instance\":%d,\"state\":%s}", k->inst, r->text);
    respond_json(k, 200, &s);
  } else if (r->status == 404) {
    respond_error(k, 404, "no state for this key");
  } else {
    respond_error(k, 500, r->text ? r->text : "state query failed");
  }
}

void sl_admin_pump(sl_core_t *c) {
  sl_admin_t *a = c->admin;
  if (!a)
    return;
  for (sl_conn_t *k = a->conns, *next; k; k = next) {
    next = k->next; /* answering may close k */
    if (k->ckpt && !k->answered)
      answer_checkpoint(k);
  }
  uv_mutex_lock(&a->mu);
  sl_areply_t *r = a->replies;
  a->replies = NULL;
  uv_mutex_unlock(&a->mu);
  while (r) {
    sl_areply_t *next = r->next;
    for (sl_conn_t *k = a->conns; k; k = k->next)
      if (k->wait == r->seq) {
        k->wait = 0;
        answer_state(k, r);
        break;
      }
    free(r->text);
    free(r);
    r = next;
  }
}

/* ---- life cycle ---- */

static int parse_addr(const char *hp, struct sockaddr_storage *ss) {
  char host[128];
  const char *colon = strrchr(hp, ':');
  if (!colon || (size_t)(colon - hp) >= sizeof host)
    return -1;
  memcpy(host, hp, (size_t)(colon - hp));
  host[colon - hp] = 0;
  int port = atoi(colon + 1);
  if (host[0] == '[') {
    size_t l = strlen(host);
    if (l < 2 || host[l - 1] != ']')
      return -1;
    host[l - 1] = 0;
    return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss);
  }
  return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

int sl_admin_start(sl_core_t *c) {
  const char *addr = c->plan->admin;
  if (!addr)
    return 0;
  sl_admin_t *a = calloc(1, sizeof *a);
  if (!a)
    return -1;
  a->c = c;
  uv_mutex_init(&a->mu);
  a->settings.on_url = on_url;
  a->settings.on_headers_complete = on_headers_complete;
  a->settings.on_body = on_body;
  a->settings.on_message_complete = on_message_complete;
  c->admin = a;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  uv_tcp_init(&c->loop, &a->listener);
  a->listener.data = a;
  a->listening = 1;
  int rc = parse_addr(addr, &ss);
  if (!rc)
    rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
  if (!rc)
    rc = uv_listen((uv_stream_t *)&a->listener, 64, on_connection);
  if (rc) {
    sl_log(SL_LOG_ERROR, "admin", "cannot listen on %s: %s", addr,
           uv_strerror(rc));
    return -1;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  char ip[64] = "?";
  int port = 0;
  if (!uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound, &len)) {
    if (bound.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    } else {
      uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
  }
  sl_log(SL_LOG_INFO, "admin", "listening on http://%s:%d", ip, port);
  return 0;
}

void sl_admin_stop(sl_core_t *c) {
  sl_admin_t *a = c->admin;
  if (!a)
    return;
  /* a POST /checkpoint still waiting gets its answer (the final
   * checkpoint may have decided it) or 503; answered connections close
   * once their response is written */
  for (sl_conn_t *k = a->conns, *next; k; k = next) {
    next = k->next;
    if (k->ckpt && !k->answered && !answer_checkpoint(k))
      respond_error(k, 503, "the pipeline stopped before the checkpoint");
    if (!k->answered)
      conn_close(k);
  }
  if (a->listening && !uv_is_closing((uv_handle_t *)&a->listener))
    uv_close((uv_handle_t *)&a->listener, NULL);
}

void sl_admin_close(sl_core_t *c) {
  sl_admin_t *a = c->admin;
  if (!a)
    return;
  sl_areply_t *r = a->replies;
  while (r) {
    sl_areply_t *next = r->next;
    free(r->text);
    free(r);
    r = next;
  }
  uv_mutex_destroy(&a->mu);
  free(a);
  c->admin = NULL;
}
