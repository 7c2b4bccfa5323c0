/* confwatch.c - reloading the conf (see confwatch.h). I/O thread only.
 *
 * The watch mirrors watch.c's for scripts: an fs event on the conf's folder
 * filtered by the file's name (editors rename a temp file over it), a
 * 200 ms debounce, and a content hash so that a touch or a save of the same
 * bytes does nothing. The new plan is loaded here (a short-lived Lua state
 * on the I/O thread) and handed to pipeline.c through c->next_plan; the
 * restart itself is a stop that takes a savepoint, then a new run.
 */
#include "confwatch.h"

#include "hash.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_CONF_DEBOUNCE_MS 200
#define SL_CONF_POLL_MS 1000

typedef struct sl_confwatch_s {
  sl_core_t *c;
  char *path, *dir, *base;
  uint64_t hash;
  uv_fs_event_t event;
  uv_fs_poll_t poll;
  uv_timer_t debounce;
  int have_event, have_poll, have_timer;
} sl_confwatch_t;

static uint64_t hash_file(const char *path, int *ok) {
  FILE *f = fopen(path, "rb");
  uint64_t h = SL_FNV1A_INIT;
  *ok = f != NULL;
  if (!f)
    return 0;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    h = sl_hash_fnv1a(h, buf, n);
  fclose(f);
  return h;
}

/* Logs a block of "FILE:LINE: message" lines one by one. */
static void log_errors(const char *errors) {
  const char *p = errors;
  while (p && *p) {
    const char *nl = strchr(p, '\n');
    int n = nl ? (int)(nl - p) : (int)strlen(p);
    if (n > 0)
      sl_log(SL_LOG_ERROR, "reload", "%.*s", n, p);
    p += n + (nl ? 1 : 0);
  }
}

void sl_confwatch_check(sl_core_t *c, int force) {
  sl_confwatch_t *cw = c->confwatch;
  if (!cw || c->stopping || c->next_plan)
    return;
  int ok;
  uint64_t h = hash_file(cw->path, &ok);
  if (!ok || (!force && h == cw->hash))
    return;
  cw->hash = h;
  sl_plan_t *plan = NULL;
  char *errors = NULL;
  int rc = sl_plan_load(cw->path, c->workers_override, &plan, &errors);
  if (rc) {
    sl_log(SL_LOG_ERROR, "reload",
           "the changed conf is not valid; the running pipeline carries on:");
    log_errors(errors);
    free(errors);
    if (c->conf_reloads)
      c->conf_reloads->failed++;
    return;
  }
  free(errors);
  if (c->conf_reloads)
    c->conf_reloads->ok++;
  c->next_plan = plan;
  atomic_store(&c->savepoint, 1);
  sl_core_restart(c, "conf changed: taking a savepoint, then restarting");
}

static void on_debounced(uv_timer_t *t) {
  sl_confwatch_t *cw = t->data;
  sl_confwatch_check(cw->c, 0);
}

static void poke(sl_confwatch_t *cw) {
  uv_timer_start(&cw->debounce, on_debounced, SL_CONF_DEBOUNCE_MS, 0);
}

static void on_event(uv_fs_event_t *h, const char *name, int events,
                     int status) {
  sl_confwatch_t *cw = h->data;
  (void)events;
  if (status == 0 && (!name || !strcmp(name, cw->base)))
    poke(cw);
}

static void on_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev,
                    const uv_stat_t *curr) {
  (void)status, (void)prev, (void)curr;
  poke(h->data);
}

static int split_path(sl_confwatch_t *cw, const char *path) {
  cw->path = strdup(path);
  cw->dir = strdup(path);
  if (!cw->path || !cw->dir)
    return -1;
  char *slash = strrchr(cw->dir, '/');
  if (slash) {
    *slash = '\0';
    cw->base = cw->path + (slash - cw->dir) + 1;
  } else {
    strcpy(cw->dir, ".");
    cw->base = cw->path;
  }
  return 0;
}

int sl_confwatch_start(sl_core_t *c) {
  sl_confwatch_t *cw = calloc(1, sizeof *cw);
  if (!cw || split_path(cw, c->plan->file)) {
    if (cw)
      free(cw->path), free(cw->dir);
    free(cw);
    return -1;
  }
  c->confwatch = cw;
  cw->c = c;
  int ok;
  cw->hash = hash_file(cw->path, &ok);
  uv_timer_init(&c->loop, &cw->debounce);
  cw->debounce.data = cw;
  cw->have_timer = 1;
  const char *mode = getenv("SLUICE_WATCH");
  int poll = mode && !strcmp(mode, "poll");
  if (!poll) {
    uv_fs_event_init(&c->loop, &cw->event);
    cw->event.data = cw;
    cw->have_event = 1;
    if (uv_fs_event_start(&cw->event, on_event, cw->dir, 0) == 0)
      return 0;
    sl_log(SL_LOG_WARN, "reload", "cannot watch %s: polling the conf", cw->dir);
  }
  uv_fs_poll_init(&c->loop, &cw->poll);
  cw->poll.data = cw;
  cw->have_poll = 1;
  uv_fs_poll_start(&cw->poll, on_poll, cw->path, SL_CONF_POLL_MS);
  return 0;
}

static void close_if(int have, uv_handle_t *h) {
  if (have && !uv_is_closing(h))
    uv_close(h, NULL);
}

void sl_confwatch_stop(sl_core_t *c) {
  sl_confwatch_t *cw = c->confwatch;
  if (!cw)
    return;
  close_if(cw->have_event, (uv_handle_t *)&cw->event);
  close_if(cw->have_poll, (uv_handle_t *)&cw->poll);
  close_if(cw->have_timer, (uv_handle_t *)&cw->debounce);
}

void sl_confwatch_close(sl_core_t *c) {
  sl_confwatch_t *cw = c->confwatch;
  if (!cw)
    return;
  free(cw->path);
  free(cw->dir);
  free(cw);
  c->confwatch = NULL;
}
