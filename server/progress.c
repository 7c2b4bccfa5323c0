/* progress.c - the live status line (see progress.h). I/O thread only.
 *
 * Every 500 ms: records in (what the sources emitted) and out (what the
 * sinks took) per second since the last tick; the share read of each
 * bounded input (a file's offset against its size; a generator's next
 * record against its count); the last checkpoint. The line is written with
 * "\r" and "erase to end of line", and log.c erases it before a log line.
 */
#include "progress.h"

#include "checkpoint.h"
#include "log.h"
#include "luaapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SL_PROGRESS_MS 500

typedef struct sl_progress_s {
  sl_core_t *c;
  uv_timer_t timer;
  uint64_t last_in, last_out;
  double last_ms;
} sl_progress_t;

/* Sum over sources and sinks. */
static void totals(sl_core_t *c, uint64_t *in, uint64_t *out) {
  *in = *out = 0;
  for (int i = 0; i < c->n_sources; i++)
    *in += c->sources[i].records_out;
  for (int i = 0; i < c->n_sinks; i++)
    *out += c->sinks[i].records_in;
}

/* Read share of the bounded inputs, in percent; -1 when none is bounded. */
static double share_read(sl_core_t *c) {
  double done = 0, total = 0;
  for (int i = 0; i < c->n_sources; i++) {
    sl_source_t *s = &c->sources[i];
    const sl_node_cfg_t *cfg = s->cfg;
    struct stat st;
    const char *path = sl_cfg_str(cfg, "path");
    double count = sl_cfg_num(cfg, "count", -1);
    if (!strcmp(cfg->kind, "file") && !sl_cfg_bool(cfg, "follow") && path &&
        s->vt->offset && stat(path, &st) == 0 && st.st_size > 0) {
      total += (double)st.st_size;
      done += s->ended ? (double)st.st_size : (double)s->vt->offset(s);
    } else if (!strcmp(cfg->kind, "generator") && count > 0) {
      total += count;
      done += (double)s->records_out;
    }
  }
  return total > 0 ? 100.0 * done / total : -1;
}

static void draw(sl_progress_t *p) {
  sl_core_t *c = p->c;
  uint64_t in, out;
  totals(c, &in, &out);
  double now = sl_now_ms(), dt = (now - p->last_ms) / 1000.0;
  if (dt <= 0)
    dt = 1;
  char line[256], part[96];
  int n = snprintf(line, sizeof line, "\r\033[K%.0f rec/s in, %.0f rec/s out",
                   (double)(in - p->last_in) / dt,
                   (double)(out - p->last_out) / dt);
  double pct = share_read(c);
  if (pct >= 0 && n < (int)sizeof line) {
    snprintf(part, sizeof part, ", %.1f%% read", pct);
    n += snprintf(line + n, sizeof line - (size_t)n, "%s", part);
  }
  sl_checkpoint_stats_t cs;
  memset(&cs, 0, sizeof cs);
  if (c->coord)
    sl_checkpoint_stats(c, &cs);
  if (cs.last_id && n < (int)sizeof line)
    n += snprintf(
        line + n, sizeof line - (size_t)n, ", checkpoint %llu %.1f s ago",
        (unsigned long long)cs.last_id, (now - cs.last_time_ms) / 1000.0);
  if (n > (int)sizeof line - 1)
    n = (int)sizeof line - 1;
  sl_log_status(line, (size_t)n);
  p->last_in = in;
  p->last_out = out;
  p->last_ms = now;
}

static void on_tick(uv_timer_t *t) {
  draw(t->data);
}

int sl_progress_start(sl_core_t *c) {
  if (!isatty(2))
    return 0;
  sl_progress_t *p = calloc(1, sizeof *p);
  if (!p)
    return 0;
  p->c = c;
  p->last_ms = sl_now_ms();
  uv_timer_init(&c->loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, SL_PROGRESS_MS, SL_PROGRESS_MS);
  c->progress = p;
  return 0;
}

void sl_progress_stop(sl_core_t *c) {
  sl_progress_t *p = c->progress;
  if (!p || uv_is_closing((uv_handle_t *)&p->timer))
    return;
  uv_close((uv_handle_t *)&p->timer, NULL);
  sl_log_status(NULL, 0);
}

void sl_progress_close(sl_core_t *c) {
  free(c->progress);
  c->progress = NULL;
}
