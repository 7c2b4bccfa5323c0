/* sink_redis.c - the `redis` sink: one Redis command per record.
 *
 * Runs on the I/O thread. Owns its hiredis connection (an async one on the
 * I/O loop through hiredis's libuv adapter under at_least_once, a blocking
 * one under exactly_once), a retry timer, and the records not yet
 * acknowledged by Redis.
 *
 * This file: the sink's vtable and life (start, write, flush, finish,
 * close), failing and reconnecting with back-off, and at_least_once on the
 * async connection. The command of each record (xadd, hset, set, publish,
 * "{key}" templates) is sink_redis_cmd.c's; exactly_once (staging in Redis
 * lists, the commit script and its marker, checkpoint state) is
 * sink_redis_eo.c's. sink_redis_impl.h is what they share.
 *
 * at_least_once: commands are pipelined on the async connection. Every
 * command is also kept, RESP-formatted, in a local queue until its reply
 * arrives (replies come in order, so a reply pops the queue's head). Above
 * 10000 unanswered commands or 8 MiB queued the sink is busy, and ready
 * again below half of both. An error reply is counted and logged (at most
 * one line a second), not fatal. When the connection drops (Redis restarted)
 * the sink reconnects with back-off and sends the whole queue again, so the
 * commands whose replies were lost may be applied twice (at-least-once).
 * After a connect, nothing is sent before a PING is answered, so a Redis
 * still loading its data set (LOADING) is retried, not fed.
 *
 * Faults: a Redis that cannot be reached is retried with back-off (100 ms
 * doubling to 2 s, a WARN each time); after 30 s without a connection the
 * sink fails with an ERROR (the pipeline exits 5, Redis unreachable). Blocking
 * calls (exactly_once) have a 1 s connect timeout and a 60 s reply timeout.
 */
#include "log.h"
#include "sink_redis_impl.h"

/* defines static functions, among them one named on_close */
#include <hiredis/adapters/libuv.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- common: failing, error replies, back-off ---- */

void sl_rsink_fail(sl_rsink_t *l, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (l->failed)
    return;
  l->failed = 1;
  l->q.len = l->q_head = l->q_n = l->q_sent = 0;
  l->pend.len = l->pend_n = 0;
  uv_timer_stop(&l->timer);
  /* "redis at HOST:PORT ...": Redis cannot be reached or refused us */
  sl_sink_fail_code(l->k, strncmp(why, "redis at ", 9) ? 3 : 5, why);
  if (l->k->busy)
    sl_sink_ready(l->k);
  if (l->finish_done) {
    sl_sink_cb done = l->finish_done;
    l->finish_done = NULL;
    done(l->k);
  }
}

/* An error reply: counted; logged at most once a second. */
static void rs_error_reply(sl_rsink_t *l, const char *msg) {
  l->k->errors++;
  l->err_count++;
  double now = sl_rsink_now();
  if (now - l->err_logged_ms >= 1000) {
    sl_log(SL_LOG_ERROR, "sink",
           "'%s': redis replied %s (%" PRIu64
           " error replies since the last such line)",
           l->k->cfg->name, msg, l->err_count);
    l->err_count = 0;
    l->err_logged_ms = now;
  }
}

/* Cannot reach Redis (why): WARN and arm the retry timer, or after 30 s
 * fail. */
void sl_rsink_retry_later(sl_rsink_t *l, const char *why, uv_timer_cb cb) {
  double now = sl_rsink_now();
  if (l->failed || l->closing)
    return;
  if (l->down_since == 0)
    l->down_since = now;
  double ct = sl_cfg_num(l->k->cfg, "connect_timeout_ms", 0);
  double give_up = ct > 0 ? ct : RS_GIVE_UP_MS;
  if (now - l->down_since >= give_up) {
    sl_rsink_fail(l, "redis at %s:%d unreachable for %d s (%s): giving up",
                  l->url.host, l->url.port, (int)(give_up / 1000), why);
    return;
  }
  if (l->backoff == 0)
    l->backoff = RS_BACKOFF_MIN;
  sl_log(SL_LOG_WARN, "sink",
         "'%s': cannot reach redis at %s:%d (%s); "
         "retrying in %" PRIu64 " ms",
         l->k->cfg->name, l->url.host, l->url.port, why, l->backoff);
  uv_timer_start(&l->timer, cb, l->backoff, 0);
  l->backoff *= 2;
  if (l->backoff > RS_BACKOFF_MAX)
    l->backoff = RS_BACKOFF_MAX;
}

void sl_rsink_up(sl_rsink_t *l) {
  if (l->down_since != 0)
    sl_log(SL_LOG_INFO, "sink", "'%s': connected to redis at %s:%d",
           l->k->cfg->name, l->url.host, l->url.port);
  l->down_since = 0;
  l->backoff = 0;
}

int sl_rsink_is_transient(const char *msg) {
  return !strncmp(msg, "LOADING", 7) || !strncmp(msg, "BUSY", 4) ||
         !strncmp(msg, "TRYAGAIN", 8) || !strncmp(msg, "MASTERDOWN", 10);
}

/* ---- at_least_once: the async connection ---- */

static void rs_a_connect(sl_rsink_t *l);

static size_t rs_q_bytes(const sl_rsink_t *l) {
  return l->q.len - l->q_head;
}

static void rs_a_check_ready(sl_rsink_t *l) {
  if (l->k->busy && l->q_n < RS_MAX_CMDS / 2 &&
      rs_q_bytes(l) < RS_MAX_BYTES / 2)
    sl_sink_ready(l->k);
}

static void rs_a_maybe_finished(sl_rsink_t *l) {
  if (l->finish_done && l->q_n == 0) {
    sl_sink_cb done = l->finish_done;
    l->finish_done = NULL;
    done(l->k);
  }
}

static void rs_a_on_reply(redisAsyncContext *ac, void *r, void *priv) {
  sl_rsink_t *l = priv;
  redisReply *reply = r;
  (void)ac;
  if (!reply || l->failed || l->q_n == 0)
    return; /* the connection went away: the command stays queued */
  if (reply->type == REDIS_REPLY_ERROR)
    rs_error_reply(l, reply->str);
  uint32_t n;
  memcpy(&n, l->q.data + l->q_head, sizeof n);
  l->q_head += sizeof n + n;
  l->q_n--;
  l->q_sent--;
  if (l->q_n == 0) {
    l->q.len = l->q_head = 0;
  } else if (l->q_head > (1u << 20) && l->q_head > l->q.len / 2) {
    memmove(l->q.data, l->q.data + l->q_head, l->q.len - l->q_head);
    l->q.len -= l->q_head;
    l->q_head = 0;
  }
  rs_a_check_ready(l);
  rs_a_maybe_finished(l);
}

/* Sends the queued commands not yet sent on this connection. */
static void rs_a_send(sl_rsink_t *l) {
  if (!l->ready || !l->ac)
    return;
  size_t off = l->q_head;
  for (size_t i = 0; i < l->q_sent; i++) {
    uint32_t n;
    memcpy(&n, l->q.data + off, sizeof n);
    off += sizeof n + n;
  }
  while (l->q_sent < l->q_n) {
    uint32_t n;
    memcpy(&n, l->q.data + off, sizeof n);
    if (redisAsyncFormattedCommand(l->ac, rs_a_on_reply, l,
                                   (const char *)l->q.data + off + sizeof n,
                                   n) != REDIS_OK)
      return; /* disconnecting: the disconnect callback reconnects */
    off += sizeof n + n;
    l->q_sent++;
  }
}

static void rs_a_on_setup(redisAsyncContext *ac, void *r, void *priv) {
  sl_rsink_t *l = priv;
  redisReply *reply = r;
  if (!reply || l->failed || ac != l->ac)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    if (sl_rsink_is_transient(reply->str)) {
      sl_log(SL_LOG_WARN, "sink", "'%s': redis not ready: %s", l->k->cfg->name,
             reply->str);
      redisAsyncDisconnect(ac); /* the disconnect callback retries */
    } else {
      sl_rsink_fail(l, "redis at %s:%d refused the connection setup: %s",
                    l->url.host, l->url.port, reply->str);
    }
    return;
  }
  if (--l->setup_left == 0) {
    sl_rsink_up(l);
    l->ready = 1;
    l->q_sent = 0;
    rs_a_send(l);
  }
}

static void rs_a_on_timer(uv_timer_t *t) {
  rs_a_connect(t->data);
}

static void rs_a_on_connect(const redisAsyncContext *ac, int status) {
  sl_rsink_t *l = ac->data;
  if (status == REDIS_OK)
    return;     /* the setup replies say when it is ready */
  l->ac = NULL; /* hiredis frees it */
  l->ready = 0;
  if (l->closing)
    return;
  sl_rsink_retry_later(l, ac->errstr, rs_a_on_timer);
}

static void rs_a_finish_close(sl_rsink_t *l);

static void rs_a_on_disconnect(const redisAsyncContext *ac, int status) {
  sl_rsink_t *l = ac->data;
  l->ac = NULL;
  l->ready = 0;
  l->q_sent = 0;
  if (l->dropping)
    return;
  if (l->closing) {
    rs_a_finish_close(l);
    return;
  }
  sl_rsink_retry_later(l, status == REDIS_OK ? "disconnected" : ac->errstr,
                       rs_a_on_timer);
}

/* Gives the connection up (why) and reconnects later. */
static void rs_a_drop(sl_rsink_t *l, const char *why) {
  char w[256];
  snprintf(w, sizeof w, "%s", why);
  redisAsyncContext *ac = l->ac;
  l->ac = NULL;
  l->ready = 0;
  l->q_sent = 0;
  l->dropping = 1;
  redisAsyncFree(ac);
  l->dropping = 0;
  sl_rsink_retry_later(l, w, rs_a_on_timer);
}

/* hiredis 0.14's libuv adapter ignores a poll error (libuv reports
 * POLLERR as a status, e.g. a refused connect or a reset connection), so
 * the connection would hang: every 200 ms the sink reads the socket's
 * pending error itself, and gives a connect 2 s to complete. */
static void rs_a_on_probe(uv_timer_t *t) {
  sl_rsink_t *l = t->data;
  int err = 0;
  socklen_t n = sizeof err;
  if (!l->ac || l->closing)
    return;
  if (getsockopt(l->ac->c.fd, SOL_SOCKET, SO_ERROR, &err, &n) == 0 && err)
    rs_a_drop(l, strerror(err));
  else if (!l->ready && sl_rsink_now() - l->connect_at > 2000)
    rs_a_drop(l, "no answer");
}

static void rs_a_connect(sl_rsink_t *l) {
  if (l->failed || l->closing)
    return;
  redisAsyncContext *ac = redisAsyncConnect(l->url.host, l->url.port);
  if (!ac) {
    sl_rsink_fail(l, "out of memory");
    return;
  }
  if (ac->err) {
    char why[128];
    snprintf(why, sizeof why, "%s", ac->errstr);
    redisAsyncFree(ac);
    sl_rsink_retry_later(l, why, rs_a_on_timer);
    return;
  }
  ac->data = l;
  if (redisLibuvAttach(ac, l->k->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    sl_rsink_fail(l, "cannot attach the redis connection to the loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, rs_a_on_connect);
  redisAsyncSetDisconnectCallback(ac, rs_a_on_disconnect);
  l->ac = ac;
  l->ready = 0;
  l->connect_at = sl_rsink_now();
  l->setup_left = 1;
  if (l->url.password[0]) {
    redisAsyncCommand(ac, rs_a_on_setup, l, "AUTH %s", l->url.password);
    l->setup_left++;
  }
  if (l->url.db) {
    redisAsyncCommand(ac, rs_a_on_setup, l, "SELECT %d", l->url.db);
    l->setup_left++;
  }
  redisAsyncCommand(ac, rs_a_on_setup, l, "PING");
}

static int rs_a_write(sl_rsink_t *l, sl_codec_reader_t *r) {
  int rc = sl_rsink_queue(l, r, &l->q, &l->q_n, sl_rsink_resp);
  if (rc == -2)
    return 0;
  rs_a_send(l);
  if (l->q_n > RS_MAX_CMDS || rs_q_bytes(l) > RS_MAX_BYTES)
    l->k->busy = 1;
  return rc;
}

/* ---- the vtable ---- */

static void rs_free_mem(sl_rsink_t *l);

static int rs_start(sl_sink_t *k) {
  const sl_node_cfg_t *c = k->cfg;
  const char *why = NULL;
  sl_rsink_t *l = calloc(1, sizeof *l);
  if (!l) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': out of memory", c->name);
    return -1;
  }
  l->k = k;
  const char *url = sl_cfg_str(c, "url");
  l->cmd = sl_rsink_command(sl_cfg_str(c, "command"));
  l->key_tpl = sl_cfg_str(c, "key");
  l->field_tpl = sl_cfg_str(c, "field");
  l->last_id = k->restored_id;
  if (!url || sl_redis_url_parse(url, &l->url, &why) < 0 || l->cmd < 0 ||
      !l->key_tpl) {
    sl_log(SL_LOG_ERROR, "sink", "'%s': %s", c->name,
           why           ? why
           : !url        ? "no url"
           : !l->key_tpl ? "no key"
                         : "bad command");
    free(l);
    return -1;
  }
  l->eo = c->exactly_once;
  if (l->eo && sl_rsink_eo_start(l) < 0) {
    rs_free_mem(l);
    return -1;
  }
  uv_timer_init(k->loop, &l->timer);
  uv_timer_init(k->loop, &l->probe);
  l->timer.data = l->probe.data = l;
  l->timers_open = 2;
  k->impl = l;
  if (!l->eo) { /* connects from the loop; start never waits */
    uv_timer_start(&l->timer, rs_a_on_timer, 0, 0);
    uv_timer_start(&l->probe, rs_a_on_probe, 200, 200);
  }
  return 0;
}

static int rs_write(sl_sink_t *k, const uint8_t *data, size_t len) {
  sl_rsink_t *l = k->impl;
  sl_codec_reader_t r;
  if (sl_codec_reader_init(&r, data, len) < 0)
    return -1;
  if (l->failed)
    return 0; /* the pipeline is failing: drop */
  return l->eo ? sl_rsink_eo_write(l, &r) : rs_a_write(l, &r);
}

static void rs_flush(sl_sink_t *k) {
  sl_rsink_t *l = k->impl;
  if (l && l->eo && l->sc && !l->failed)
    sl_rsink_eo_flush(l);
}

static void rs_finish(sl_sink_t *k, sl_sink_cb done) {
  sl_rsink_t *l = k->impl;
  if (!l || l->failed) {
    done(k);
    return;
  }
  l->finishing = 1;
  if (l->eo) { /* stage everything; the final checkpoint commits it */
    sl_rsink_eo_push_all(l); /* a failure called sl_sink_fail */
    done(k);
    return;
  }
  l->finish_done = done;
  rs_a_maybe_finished(l);
}

static void rs_free_mem(sl_rsink_t *l) {
  if (l->sc)
    redisFree(l->sc);
  sl_buf_free(&l->tmp_v);
  sl_buf_free(&l->tmp_k);
  sl_buf_free(&l->tmp_key);
  sl_buf_free(&l->tmp_field);
  sl_buf_free(&l->q);
  sl_buf_free(&l->pend);
  free(l->k_marker);
  free(l->k_runs);
  free(l->k_lists);
  free(l->k_staged);
  free(l->eps);
  free(l);
}

static void rs_free(sl_rsink_t *l) {
  sl_sink_t *k = l->k;
  sl_sink_cb done = l->close_done;
  rs_free_mem(l);
  done(k);
}

static void rs_a_finish_close(sl_rsink_t *l) {
  if (l->ac || l->timers_open > 0)
    return;
  rs_free(l);
}

static void rs_on_timer_closed(uv_handle_t *h) {
  sl_rsink_t *l = h->data;
  l->timers_open--;
  rs_a_finish_close(l);
}

static void rs_close(sl_sink_t *k, sl_sink_cb done) {
  sl_rsink_t *l = k->impl;
  k->impl = NULL;
  if (!l) {
    done(k);
    return;
  }
  l->closing = 1;
  l->close_done = done;
  if (l->ac) {
    /* commands still unanswered are dropped (a stop without a final
     * checkpoint); redisAsyncFree calls their callbacks with NULL, and the
     * disconnect callback when it was connected */
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    redisAsyncFree(ac);
  }
  uv_close((uv_handle_t *)&l->timer, rs_on_timer_closed);
  uv_close((uv_handle_t *)&l->probe, rs_on_timer_closed);
}

const sl_sink_vt_t sl_sink_redis_vt = {
    .kind = "redis",
    .start = rs_start,
    .write = rs_write,
    .flush = rs_flush,
    .finish = rs_finish,
    .close = rs_close,
    .precommit = sl_rsink_eo_precommit,
    .commit = sl_rsink_eo_commit,
    .restore = sl_rsink_eo_restore,
};
