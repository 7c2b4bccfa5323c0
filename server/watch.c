/* watch.c - hot reload of operator scripts (see watch.h, docs/reload.md).
 *
 * Everything here runs on the I/O thread except sl_watch_reply (any
 * thread: a mutex-guarded list plus a wake of the I/O loop, the pattern of
 * the checkpoint acks).
 *
 * Why the folder and not the file: editors save by writing a temp file and
 * renaming it over the script, or by deleting and re-creating it. A watch
 * on the file itself follows the old inode and goes deaf after the first
 * such save; a watch on the folder sees every name that changes in it, and
 * we keep the events for the scripts' names. Events come in bursts (create,
 * write, write, rename), so each script has a 100 ms debounce timer, and a
 * burst that leaves the content as it was (same hash) is not a change.
 */
#include "watch.h"

#include "checkpoint.h"
#include "confwatch.h"
#include "hash.h"
#include "log.h"
#include "luaapi.h"
#include "sluice.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_WATCH_DEBOUNCE_MS 100
#define SL_WATCH_POLL_MS 1000
#define SL_WATCH_MAX_BYTES (64u << 20)
/* A worker that has not answered PREPARE by then (a batch that runs for
 * long, a script looping with the JIT on) aborts the reload; the override
 * is for tests. */
#ifndef SL_WATCH_PREPARE_TIMEOUT_MS
#define SL_WATCH_PREPARE_TIMEOUT_MS 10000
#endif

typedef struct sl_wdir_s sl_wdir_t;
typedef struct sl_watch_s sl_watch_t;

typedef struct sl_script_s {
  sl_watch_t *wt;
  char *path;    /* absolute */
  char *display; /* as errors show it (the chunk name without '@') */
  const char *base;
  sl_wdir_t *dir;
  uint8_t *hosts; /* [thread]: a worker hosts an instance running it */
  uint64_t hash;  /* of the content last seen (loaded or reloaded) */
  int have_hash;
  int version;       /* 1 + the reloads committed */
  uint64_t run_hash; /* of the version committed last (0: not read) */
  double since_ms;   /* when it was committed (or loaded) */
  char *error;       /* why the last failed reload failed, or NULL */
  double error_ms;
  int want; /* 0, 1 = check for a change, 2 = reload even if unchanged */
  uv_timer_t debounce;
  uv_fs_poll_t poll;
  int polling;
} sl_script_t;

struct sl_wdir_s {
  sl_watch_t *wt;
  char *path;
  uv_fs_event_t ev;
  int active;
};

typedef struct sl_reply_s {
  struct sl_reply_s *next;
  uint64_t seq;
  int thread;
  char *err;
} sl_reply_t;

struct sl_watch_s {
  sl_core_t *c;
  sl_script_t *scripts;
  int n;
  sl_wdir_t *dirs;
  int n_dirs;
  uv_signal_t sighup;
  uv_timer_t deadline; /* the prepare round's */
  int handles;         /* handles were initialised on the loop */
  uv_mutex_t mu;
  sl_reply_t *replies; /* (mu) */
  /* the reload in flight */
  int busy, cur, waiting;
  int timed_out; /* the prepare round passed its deadline */
  uint64_t seq;
  char *err;
};

/* ---- files ---- */

/* The whole file, or NULL (missing, unreadable, too big). */
static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      char *nb = cap < SL_WATCH_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0)
      break;
  }
  if (buf && ferror(f)) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* ---- replies ---- */

void sl_watch_reply(sl_core_t *c, uint64_t seq, int thread, const char *err) {
  sl_watch_t *wt = c->watch;
  if (!wt)
    return;
  sl_reply_t *r = calloc(1, sizeof *r);
  if (!r) {
    sl_core_fail(c, SL_EXIT_RUNTIME);
    return;
  }
  r->seq = seq;
  r->thread = thread;
  r->err = err ? strdup(err) : NULL;
  if (err && !r->err)
    r->err = strdup("out of memory");
  uv_mutex_lock(&wt->mu);
  r->next = wt->replies;
  wt->replies = r;
  uv_mutex_unlock(&wt->mu);
  uv_async_send(&c->wake);
}

/* ---- the two phases ---- */

static void post_all(sl_watch_t *wt, sl_script_t *s, int kind, const char *src,
                     size_t len, int *posted) {
  sl_core_t *c = wt->c;
  *posted = 0;
  for (int t = 1; t <= c->plan->workers; t++) {
    if (!s->hosts[t])
      continue;
    if (sl_worker_post(c->workers[t], kind, wt->seq, s->path, src, len)) {
      sl_log(SL_LOG_ERROR, "reload", "out of memory");
      sl_core_fail(c, SL_EXIT_RUNTIME);
      return;
    }
    (*posted)++;
  }
}

static void on_deadline(uv_timer_t *t);

/* SLUICE_PREPARE_TIMEOUT_MS (tests) or SL_WATCH_PREPARE_TIMEOUT_MS. */
static uint64_t prepare_timeout_ms(void) {
  const char *e = getenv("SLUICE_PREPARE_TIMEOUT_MS");
  long v = e ? strtol(e, NULL, 10) : 0;
  return v > 0 ? (uint64_t)v : SL_WATCH_PREPARE_TIMEOUT_MS;
}

/* Starts reloading script i, if it changed (or force). */
static void begin(sl_watch_t *wt, int i, int force) {
  sl_script_t *s = &wt->scripts[i];
  size_t len = 0;
  char *src = read_all(s->path, &len);
  if (!src) {
    /* deleted, or between an editor's delete and re-create: the next
     * event brings it back */
    sl_log(force ? SL_LOG_WARN : SL_LOG_DEBUG, "reload",
           "%s: cannot read it now; the running version stays", s->display);
    return;
  }
  uint64_t h = sl_hash_fnv1a(SL_FNV1A_INIT, src, len);
  if (!force && s->have_hash && h == s->hash) {
    sl_log(SL_LOG_DEBUG, "reload", "%s: touched but unchanged", s->display);
    free(src);
    return;
  }
  /* a broken save is not retried: the next save has another hash */
  s->hash = h;
  s->have_hash = 1;
  wt->seq++;
  wt->cur = i;
  free(wt->err);
  wt->err = NULL;
  wt->timed_out = 0;
  sl_log(SL_LOG_INFO, "reload", "%s %s: compiling it in every worker",
         s->display, force ? "reload asked for" : "changed");
  int posted = 0;
  post_all(wt, s, SL_WMSG_PREPARE, src, len, &posted);
  free(src);
  wt->waiting = posted;
  wt->busy = posted > 0;
  if (wt->busy && wt->handles)
    uv_timer_start(&wt->deadline, on_deadline, prepare_timeout_ms(), 0);
}

static void finish(sl_watch_t *wt) {
  sl_core_t *c = wt->c;
  sl_script_t *s = &wt->scripts[wt->cur];
  int posted = 0;
  wt->busy = 0;
  if (wt->handles)
    uv_timer_stop(&wt->deadline);
  if (!wt->err && !wt->timed_out) {
    post_all(wt, s, SL_WMSG_COMMIT, NULL, 0, &posted);
    s->version++;
    s->run_hash = s->hash;
    s->since_ms = sl_now_ms();
    c->reloads_ok++;
    sl_log(SL_LOG_INFO, "reload", "%s: version %d is swapped in %s", s->display,
           s->version,
           sl_checkpoint_periodic(c) ? "at the next checkpoint barrier"
                                     : "between batches");
    if (sl_checkpoint_periodic(c))
      sl_checkpoint_request(c);
  } else {
    post_all(wt, s, SL_WMSG_ABORT, NULL, 0, &posted);
    c->reloads_failed++;
    const char *why = wt->err ? wt->err : "out of memory";
    free(s->error);
    s->error = strdup(why);
    s->error_ms = sl_now_ms();
    sl_log(SL_LOG_ERROR, "reload",
           "reload of %s failed: %s; version %d keeps running", s->display, why,
           s->version);
  }
}

/* Starts the next wanted reload when none is in flight. */
static void kick(sl_watch_t *wt) {
  sl_core_t *c = wt->c;
  while (!wt->busy && !c->stopping && !c->shutting_down) {
    int i = 0;
    while (i < wt->n && !wt->scripts[i].want)
      i++;
    if (i == wt->n)
      return;
    int force = wt->scripts[i].want == 2;
    wt->scripts[i].want = 0;
    begin(wt, i, force);
  }
}

/* The prepare round took too long: abort it (the workers that answer late
 * are ignored by seq; the ABORT behind the PREPARE in their inboxes drops
 * what they prepared). */
static void on_deadline(uv_timer_t *t) {
  sl_watch_t *wt = t->data;
  if (!wt->busy)
    return;
  wt->timed_out = 1;
  if (!wt->err) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "%d worker%s did not answer within %llu ms (busy in a long "
             "batch?)",
             wt->waiting, wt->waiting == 1 ? "" : "s",
             (unsigned long long)prepare_timeout_ms());
    wt->err = strdup(msg);
  }
  wt->waiting = 0;
  finish(wt);
  kick(wt);
}

void sl_watch_pump(sl_core_t *c) {
  sl_watch_t *wt = c->watch;
  if (!wt)
    return;
  uv_mutex_lock(&wt->mu);
  sl_reply_t *r = wt->replies;
  wt->replies = NULL;
  uv_mutex_unlock(&wt->mu);
  sl_reply_t *fifo = NULL;
  while (r) {
    sl_reply_t *next = r->next;
    r->next = fifo;
    fifo = r;
    r = next;
  }
  for (r = fifo; r;) {
    sl_reply_t *next = r->next;
    if (wt->busy && r->seq == wt->seq) {
      if (r->err && !wt->err) {
        wt->err = r->err;
        r->err = NULL;
      }
      if (--wt->waiting == 0)
        finish(wt);
    }
    free(r->err);
    free(r);
    r = next;
  }
  kick(wt);
}

static void want(sl_watch_t *wt, int i, int level) {
  if (wt->scripts[i].want < level)
    wt->scripts[i].want = level;
  kick(wt);
}

void sl_watch_reload_all(sl_core_t *c, const char *why) {
  sl_watch_t *wt = c->watch;
  if (!wt)
    return;
  sl_log(SL_LOG_INFO, "reload", "%s: reloading %d script%s", why, wt->n,
         wt->n == 1 ? "" : "s");
  for (int i = 0; i < wt->n; i++)
    want(wt, i, 2);
}

/* ---- watching ---- */

static void on_debounced(uv_timer_t *t) {
  sl_script_t *s = t->data;
  want(s->wt, (int)(s - s->wt->scripts), 1);
}

static void poke(sl_script_t *s) {
  if (!s->wt->c->shutting_down)
    uv_timer_start(&s->debounce, on_debounced, SL_WATCH_DEBOUNCE_MS, 0);
}

static void on_dir_event(uv_fs_event_t *h, const char *name, int events,
                         int status) {
  (void)events;
  sl_wdir_t *d = h->data;
  sl_watch_t *wt = d->wt;
  if (status < 0) {
    sl_log(SL_LOG_WARN, "reload", "watching %s: %s", d->path,
           uv_strerror(status));
    return;
  }
  for (int i = 0; i < wt->n; i++) {
    sl_script_t *s = &wt->scripts[i];
    if (s->dir == d && (!name || !strcmp(name, s->base)))
      poke(s);
  }
}

static void on_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev,
                    const uv_stat_t *curr) {
  (void)status;
  (void)prev;
  (void)curr;
  poke(h->data);
}

static void on_hup(uv_signal_t *h, int signum) {
  (void)signum;
  sl_watch_reload_all(h->data, "SIGHUP");
  sl_confwatch_check(h->data, 0); /* and the conf, if it changed */
}

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return strdup(".");
  if (slash == path)
    return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

int sl_watch_create(sl_core_t *c) {
  const sl_plan_t *p = c->plan;
  sl_watch_t *wt = calloc(1, sizeof *wt);
  if (!wt)
    return -1;
  wt->c = c;
  uv_mutex_init(&wt->mu);
  c->watch = wt;
  wt->scripts = calloc((size_t)p->n_nodes + 1, sizeof *wt->scripts);
  wt->dirs = calloc((size_t)p->n_nodes + 1, sizeof *wt->dirs);
  if (!wt->scripts || !wt->dirs)
    return -1;
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    if (node->type != SL_NODE_OPERATOR || !node->script)
      continue;
    int i = 0;
    while (i < wt->n && strcmp(wt->scripts[i].path, node->script))
      i++;
    sl_script_t *s = &wt->scripts[i];
    if (i == wt->n) {
      wt->n++;
      s->wt = wt;
      s->version = 1;
      s->since_ms = sl_now_ms();
      s->path = strdup(node->script);
      s->display = strdup(node->chunkname && node->chunkname[0] == '@'
                              ? node->chunkname + 1
                              : node->script);
      s->hosts = calloc((size_t)p->threads + 1, 1);
      if (!s->path || !s->display || !s->hosts)
        return -1;
      s->base = strrchr(s->path, '/') ? strrchr(s->path, '/') + 1 : s->path;
      char *dir = dir_of(s->path);
      if (!dir)
        return -1;
      int d = 0;
      while (d < wt->n_dirs && strcmp(wt->dirs[d].path, dir))
        d++;
      if (d == wt->n_dirs) {
        wt->dirs[d].wt = wt;
        wt->dirs[d].path = dir;
        wt->n_dirs++;
      } else {
        free(dir);
      }
      s->dir = &wt->dirs[d];
      size_t len = 0;
      char *src = read_all(s->path, &len);
      if (src) {
        s->hash = s->run_hash = sl_hash_fnv1a(SL_FNV1A_INIT, src, len);
        s->have_hash = 1;
        free(src);
      }
    }
    for (int g = node->first_gid; g < node->first_gid + node->parallelism; g++)
      s->hosts[p->insts[g].thread] = 1;
  }
  return 0;
}

int sl_watch_start(sl_core_t *c) {
  sl_watch_t *wt = c->watch;
  if (!wt)
    return 0;
  const char *mode = getenv("SLUICE_WATCH");
  int force_poll = mode && !strcmp(mode, "poll");
  uv_signal_init(&c->loop, &wt->sighup);
  wt->sighup.data = c;
  uv_signal_start(&wt->sighup, on_hup, SIGHUP);
  uv_timer_init(&c->loop, &wt->deadline);
  wt->deadline.data = wt;
  for (int i = 0; i < wt->n; i++) {
    uv_timer_init(&c->loop, &wt->scripts[i].debounce);
    wt->scripts[i].debounce.data = &wt->scripts[i];
  }
  for (int d = 0; d < wt->n_dirs; d++) {
    sl_wdir_t *dir = &wt->dirs[d];
    uv_fs_event_init(&c->loop, &dir->ev);
    dir->ev.data = dir;
    int rc = force_poll
                 ? UV_ENOSYS
                 : uv_fs_event_start(&dir->ev, on_dir_event, dir->path, 0);
    dir->active = rc == 0;
    if (rc && !force_poll)
      sl_log(SL_LOG_WARN, "reload",
             "cannot watch %s (%s): polling its scripts every %d ms", dir->path,
             uv_strerror(rc), SL_WATCH_POLL_MS);
  }
  int polled = 0;
  for (int i = 0; i < wt->n; i++) {
    sl_script_t *s = &wt->scripts[i];
    uv_fs_poll_init(&c->loop, &s->poll);
    s->poll.data = s;
    if (!s->dir->active &&
        uv_fs_poll_start(&s->poll, on_poll, s->path, SL_WATCH_POLL_MS) == 0) {
      s->polling = 1;
      polled++;
    }
  }
  wt->handles = 1;
  if (wt->n)
    sl_log(SL_LOG_INFO, "reload", "watching %d script%s (%s); SIGHUP reloads",
           wt->n, wt->n == 1 ? "" : "s",
           polled == wt->n ? "polling"
           : polled        ? "fs events, some polling"
                           : "fs events");
  return 0;
}

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h))
    uv_close(h, NULL);
}

int sl_watch_script(sl_core_t *c, int i, sl_watch_info_t *out) {
  sl_watch_t *wt = c->watch;
  if (!wt || i < 0 || i >= wt->n)
    return -1;
  const sl_script_t *s = &wt->scripts[i];
  out->path = s->display;
  out->version = s->version;
  out->hash = s->run_hash;
  out->since_ms = s->since_ms;
  out->error = s->error;
  out->error_ms = s->error_ms;
  return 0;
}

void sl_watch_stop(sl_core_t *c) {
  sl_watch_t *wt = c->watch;
  if (!wt || !wt->handles)
    return;
  close_handle((uv_handle_t *)&wt->sighup);
  close_handle((uv_handle_t *)&wt->deadline);
  for (int d = 0; d < wt->n_dirs; d++)
    close_handle((uv_handle_t *)&wt->dirs[d].ev);
  for (int i = 0; i < wt->n; i++) {
    close_handle((uv_handle_t *)&wt->scripts[i].debounce);
    close_handle((uv_handle_t *)&wt->scripts[i].poll);
  }
}

void sl_watch_close(sl_core_t *c) {
  sl_watch_t *wt = c->watch;
  if (!wt)
    return;
  sl_reply_t *r = wt->replies;
  while (r) {
    sl_reply_t *next = r->next;
    free(r->err);
    free(r);
    r = next;
  }
  for (int i = 0; wt->scripts && i < wt->n; i++) {
    free(wt->scripts[i].path);
    free(wt->scripts[i].display);
    free(wt->scripts[i].hosts);
    free(wt->scripts[i].error);
  }
  for (int d = 0; wt->dirs && d < wt->n_dirs; d++)
    free(wt->dirs[d].path);
  free(wt->scripts);
  free(wt->dirs);
  free(wt->err);
  uv_mutex_destroy(&wt->mu);
  free(wt);
  c->watch = NULL;
}
