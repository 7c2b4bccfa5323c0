/* status.c - GET /status: the pipeline as JSON (see status.h), and the
 * running/starting/stopping/failed state that /health and sluice_up report.
 *
 * I/O thread: reads the plan, the coordinator's counts, the script watcher
 * and the log's ring of recent errors.
 */
#include "status.h"

#include "checkpoint.h"
#include "log.h"
#include "luaapi.h"
#include "sluice.h"
#include "watch.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int sl_status_running(const sl_core_t *c) {
  return c->started_ms > 0 && !c->stopping && !c->shutting_down &&
         !atomic_load(&c->exit_code);
}

const char *sl_status_state(const sl_core_t *c) {
  if (atomic_load(&c->exit_code))
    return "failed";
  if (c->restoring)
    return "restoring";
  if (c->stopping || c->shutting_down)
    return "stopping";
  return c->started_ms > 0 ? "running" : "starting";
}

const char *sl_status_type_name(int t) {
  return t == SL_NODE_SOURCE ? "source"
         : t == SL_NODE_SINK ? "sink"
                             : "operator";
}

static const char *grouping_name(int g) {
  return g == SL_GROUP_KEY         ? "key"
         : g == SL_GROUP_BROADCAST ? "broadcast"
         : g == SL_GROUP_FORWARD   ? "forward"
                                   : "shuffle";
}

/* "nodes": each node with its kind, script, grouping and the thread of
 * each instance. */
static void nodes_json(sl_text_t *s, const sl_plan_t *p) {
  SL_TEXT_LIT(s, ",\"nodes\":[");
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    if (n)
      SL_TEXT_LIT(s, ",");
    SL_TEXT_LIT(s, "{\"name\":");
    sl_text_jsonz(s, node->cfg.name);
    sl_text_printf(
        s, ",\"type\":\"%s\",\"kind\":", sl_status_type_name(node->type));
    sl_text_jsonz(s, node->cfg.kind);
    if (node->type == SL_NODE_OPERATOR) {
      SL_TEXT_LIT(s, ",\"script\":");
      sl_text_jsonz(s, node->script);
      sl_text_printf(s, ",\"grouping\":\"%s\"", grouping_name(node->grouping));
    }
    sl_text_printf(s, ",\"parallelism\":%d,\"threads\":[", node->parallelism);
    for (int i = 0; i < node->parallelism; i++)
      sl_text_printf(s, "%s%d", i ? "," : "",
                     p->insts[node->first_gid + i].thread);
    SL_TEXT_LIT(s, "]}");
  }
  SL_TEXT_LIT(s, "]");
}

/* "threads": {"0": [...], "1": [...]}: the instances on each thread, as
 * "name" or "name[i]" when the node has several. */
static void threads_json(sl_text_t *s, const sl_plan_t *p) {
  SL_TEXT_LIT(s, ",\"threads\":{");
  for (int t = 0; t <= p->workers; t++) {
    sl_text_printf(s, "%s\"%d\":[", t ? "," : "", t);
    int first = 1;
    for (int g = 0; g < p->n_insts; g++) {
      const sl_plan_node_t *node = &p->nodes[p->insts[g].node];
      if (p->insts[g].thread != t)
        continue;
      char name[160];
      if (node->parallelism > 1)
        snprintf(name, sizeof name, "%s[%d]", node->cfg.name,
                 p->insts[g].index);
      else
        snprintf(name, sizeof name, "%s", node->cfg.name);
      if (!first)
        SL_TEXT_LIT(s, ",");
      first = 0;
      sl_text_jsonz(s, name);
    }
    SL_TEXT_LIT(s, "]");
  }
  SL_TEXT_LIT(s, "}");
}

static void checkpoint_json(sl_text_t *s, sl_core_t *c) {
  sl_checkpoint_stats_t ck;
  memset(&ck, 0, sizeof ck);
  if (!c->restoring) /* the restore's thread is building the coordinator */
    sl_checkpoint_stats(c, &ck);
  sl_text_printf(s,
                 ",\"checkpoint\":{\"enabled\":%s,\"completed\":%" PRIu64
                 ",\"failed\":%" PRIu64 ",\"in_progress\":%" PRIu64,
                 !c->restoring && sl_checkpoint_periodic(c) ? "true" : "false",
                 ck.completed, ck.failed, ck.pending);
  if (ck.last_id)
    sl_text_printf(s,
                   ",\"last\":{\"id\":%" PRIu64 ",\"time_ms\":%.0f"
                   ",\"duration_ms\":%.0f,\"bytes\":%" PRIu64 "}}",
                   ck.last_id, ck.last_time_ms, ck.last_duration_ms,
                   ck.last_bytes);
  else
    SL_TEXT_LIT(s, ",\"last\":null}");
}

/* "scripts": each operator script's running version. */
static void scripts_json(sl_text_t *s, sl_core_t *c) {
  SL_TEXT_LIT(s, ",\"scripts\":[");
  sl_watch_info_t w;
  for (int i = 0; sl_watch_script(c, i, &w) == 0; i++) {
    if (i)
      SL_TEXT_LIT(s, ",");
    SL_TEXT_LIT(s, "{\"path\":");
    sl_text_jsonz(s, w.path);
    sl_text_printf(s,
                   ",\"version\":%d,\"hash\":\"%016" PRIx64
                   "\",\"since_ms\":%.0f,\"last_error\":",
                   w.version, w.hash, w.since_ms);
    if (w.error) {
      sl_text_printf(s, "{\"time_ms\":%.0f,\"error\":", w.error_ms);
      sl_text_jsonz(s, w.error);
      SL_TEXT_LIT(s, "}}");
    } else {
      SL_TEXT_LIT(s, "null}");
    }
  }
  SL_TEXT_LIT(s, "]");
}

static void reloads_json(sl_text_t *s, const sl_core_t *c) {
  const sl_conf_reloads_t *cr = c->conf_reloads;
  sl_text_printf(s,
                 ",\"reloads\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
                 ",\"conf_ok\":%" PRIu64 ",\"conf_failed\":%" PRIu64 "}",
                 c->reloads_ok, c->reloads_failed, cr ? cr->ok : 0,
                 cr ? cr->failed : 0);
}

/* "errors": the last WARN and ERROR events of the process, oldest first,
 * with the counts of each level. */
static void errors_json(sl_text_t *s) {
  sl_log_entry_t recent[SL_LOG_RECENT];
  int n = sl_log_recent(recent, SL_LOG_RECENT);
  sl_text_printf(s, ",\"errors\":{\"warn\":%llu,\"error\":%llu,\"last\":[",
                 sl_log_count(SL_LOG_WARN), sl_log_count(SL_LOG_ERROR));
  for (int i = 0; i < n; i++) {
    sl_text_printf(
        s, "%s{\"time_ms\":%.0f,\"level\":\"%s\",\"component\":", i ? "," : "",
        recent[i].time_ms, sl_log_level_name(recent[i].level));
    sl_text_jsonz(s, recent[i].component);
    SL_TEXT_LIT(s, ",\"msg\":");
    sl_text_jsonz(s, recent[i].msg);
    SL_TEXT_LIT(s, "}");
  }
  SL_TEXT_LIT(s, "]}");
}

void sl_status_render(sl_core_t *c, sl_text_t *out) {
  const sl_plan_t *p = c->plan;
  sl_text_t *s = out;
  SL_TEXT_LIT(s, "{\"pipeline\":");
  sl_text_jsonz(s, p->name);
  SL_TEXT_LIT(s, ",\"conf\":");
  sl_text_jsonz(s, p->file);
  SL_TEXT_LIT(s, ",\"version\":");
  sl_text_jsonz(s, sl_version());
  SL_TEXT_LIT(s, ",\"state\":");
  sl_text_jsonz(s, sl_status_state(c));
  SL_TEXT_LIT(s, ",\"guarantee\":");
  sl_text_jsonz(s, p->guarantee);
  sl_text_printf(s, ",\"workers\":%d,\"max_parallelism\":%d,\"uptime_s\":%.3f",
                 p->workers, p->max_parallelism,
                 c->started_ms > 0 ? (sl_now_ms() - c->started_ms) / 1000.0
                                   : 0);
  nodes_json(s, p);
  threads_json(s, p);
  checkpoint_json(s, c);
  scripts_json(s, c);
  reloads_json(s, c);
  errors_json(s);
  SL_TEXT_LIT(s, "}");
}
