/* status.c - GET /status: the pipeline as JSON (see status.h), and the
 * running/starting/stopping/failed state that /health and sluice_up report.
 *
 * I/O thread: reads the plan, the coordinator's counts, the script watcher
 * and the log's ring of recent errors.
 */
#include "status.h"

#include "checkpoint.h"
#include "luaapi.h"
#include "sluice.h"

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

void sl_status_render(sl_core_t *c, sl_text_t *out) {
  const sl_plan_t *p = c->plan;
  sl_text_t s = *out;
  SL_TEXT_LIT(&s, "{\"pipeline\":");
  sl_text_jsonz(&s, p->name);
  SL_TEXT_LIT(&s, ",\"conf\":");
  sl_text_jsonz(&s, p->file);
  SL_TEXT_LIT(&s, ",\"version\":");
  sl_text_jsonz(&s, sl_version());
  SL_TEXT_LIT(&s, ",\"state\":");
  sl_text_jsonz(&s, sl_status_state(c));
  SL_TEXT_LIT(&s, ",\"guarantee\":");
  sl_text_jsonz(&s, p->guarantee);
  sl_text_printf(&s, ",\"workers\":%d,\"max_parallelism\":%d,\"uptime_s\":%.3f",
                 p->workers, p->max_parallelism,
                 c->started_ms > 0 ? (sl_now_ms() - c->started_ms) / 1000.0
                                   : 0);
  SL_TEXT_LIT(&s, ",\"nodes\":[");
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    if (n)
      SL_TEXT_LIT(&s, ",");
    SL_TEXT_LIT(&s, "{\"name\":");
    sl_text_jsonz(&s, node->cfg.name);
    sl_text_printf(
        &s, ",\"type\":\"%s\",\"kind\":", sl_status_type_name(node->type));
    sl_text_jsonz(&s, node->cfg.kind);
    if (node->type == SL_NODE_OPERATOR) {
      SL_TEXT_LIT(&s, ",\"script\":");
      sl_text_jsonz(&s, node->script);
      sl_text_printf(&s, ",\"grouping\":\"%s\"", grouping_name(node->grouping));
    }
    sl_text_printf(&s, ",\"parallelism\":%d,\"threads\":[", node->parallelism);
    for (int i = 0; i < node->parallelism; i++)
      sl_text_printf(&s, "%s%d", i ? "," : "",
                     p->insts[node->first_gid + i].thread);
    SL_TEXT_LIT(&s, "]}");
  }
  SL_TEXT_LIT(&s, "],\"threads\":{");
  for (int t = 0; t <= p->workers; t++) {
    sl_text_printf(&s, "%s\"%d\":[", t ? "," : "", t);
    int first = 1;
    for (int g = 0; g < p->n_insts; g++) {
      if (p->insts[g].thread != t)
        continue;
      if (!first)
        SL_TEXT_LIT(&s, ",");
      first = 0;
      sl_text_json(&s, p->nodes[p->insts[g].node].cfg.name,
                   strlen(p->nodes[p->insts[g].node].cfg.name));
      if (p->nodes[p->insts[g].node].parallelism > 1)
        s.len--, sl_text_printf(&s, "[%d]\"", p->insts[g].index);
    }
    SL_TEXT_LIT(&s, "]");
  }
  sl_checkpoint_stats_t ck;
  sl_checkpoint_stats(c, &ck);
  sl_text_printf(&s,
                 "},\"checkpoint\":{\"enabled\":%s,\"completed\":%" PRIu64
                 ",\"failed\":%" PRIu64 ",\"in_progress\":%" PRIu64,
                 sl_checkpoint_periodic(c) ? "true" : "false", ck.completed,
                 ck.failed, ck.pending);
  if (ck.last_id)
    sl_text_printf(&s,
                   ",\"last\":{\"id\":%" PRIu64 ",\"time_ms\":%.0f"
                   ",\"duration_ms\":%.0f,\"bytes\":%" PRIu64 "}",
                   ck.last_id, ck.last_time_ms, ck.last_duration_ms,
                   ck.last_bytes);
  else
    SL_TEXT_LIT(&s, ",\"last\":null");
  sl_text_printf(&s,
                 "},\"reloads\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 "}}",
                 c->reloads_ok, c->reloads_failed);
  *out = s;
}
