/* metrics.c - GET /metrics: the Prometheus text exposition (format 0.0.4)
 * of what the pipeline has done (see metrics.h; the list is in
 * docs/operations.md).
 *
 * I/O thread. Reads what the I/O thread owns directly (sources, sinks, the
 * checkpoint coordinator, reload counts) and what workers own through the
 * relaxed atomics they publish (operator counts, Lua memory, latency
 * histograms). Every sample carries the pipeline's name as a label.
 */
#include "metrics.h"

#include "checkpoint.h"
#include "histo.h"
#include "log.h"
#include "luaapi.h"
#include "status.h"
#include "worker.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void metric_head(sl_text_t *s, const char *name, const char *type,
                        const char *help) {
  sl_text_printf(s, "# HELP sluice_%s %s\n# TYPE sluice_%s %s\n", name, help,
                 name, type);
}

/* sluice_NAME{pipeline="p"[,LABEL="node"][,instance="i"] (left open) */
static void series(sl_text_t *s, const sl_core_t *c, const char *name,
                   const char *label, const char *node, int inst) {
  sl_text_printf(s, "sluice_%s{pipeline=\"", name);
  sl_text_label(s, c->plan->name);
  SL_TEXT_LIT(s, "\"");
  if (label) {
    sl_text_printf(s, ",%s=\"", label);
    sl_text_label(s, node);
    SL_TEXT_LIT(s, "\"");
  }
  if (inst >= 0)
    sl_text_printf(s, ",instance=\"%d\"", inst);
}

/* "} VALUE\n": integers without a decimal point. */
static void value_end(sl_text_t *s, double value) {
  if (value == (double)(int64_t)value && value < 1e15 && value > -1e15)
    sl_text_printf(s, "} %" PRId64 "\n", (int64_t)value);
  else
    sl_text_printf(s, "} %.9g\n", value);
}

/* name{pipeline="p",node_label="node"[,instance="i"]} value */
static void sample(sl_text_t *s, const sl_core_t *c, const char *name,
                   const char *label, const char *node, int inst,
                   double value) {
  series(s, c, name, label, node, inst);
  value_end(s, value);
}

/* The _bucket (cumulative, le), _sum and _count lines of one histogram. */
static void histo_samples(sl_text_t *s, const sl_core_t *c, const char *name,
                          const char *label, const char *node, int inst,
                          const sl_histo_t *h) {
  sl_histo_snap_t hs;
  sl_histo_read(h, &hs);
  char full[96];
  snprintf(full, sizeof full, "%s_bucket", name);
  for (int b = 0; b <= SL_HISTO_BUCKETS; b++) {
    series(s, c, full, label, node, inst);
    if (b < SL_HISTO_BUCKETS)
      sl_text_printf(s, ",le=\"%.6g\"", (double)sl_histo_bound_ns(b) / 1e9);
    else
      SL_TEXT_LIT(s, ",le=\"+Inf\"");
    value_end(s, (double)(b < SL_HISTO_BUCKETS ? hs.cum[b] : hs.count));
  }
  snprintf(full, sizeof full, "%s_sum", name);
  sample(s, c, full, label, node, inst, hs.sum_s);
  snprintf(full, sizeof full, "%s_count", name);
  sample(s, c, full, label, node, inst, (double)hs.count);
}

static uint64_t relaxed(_Atomic uint64_t *v) {
  return atomic_load_explicit(v, memory_order_relaxed);
}

/* One metric over every instance of the nodes of one type. */
typedef double (*inst_value_fn)(sl_core_t *c, int gid);

static void per_instance(sl_text_t *s, sl_core_t *c, int type, const char *name,
                         const char *mtype, const char *help,
                         inst_value_fn fn) {
  const sl_plan_t *p = c->plan;
  metric_head(s, name, mtype, help);
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    if (node->type != type)
      continue;
    for (int i = 0; i < node->parallelism; i++) {
      double v = fn(c, node->first_gid + i);
      if (v >= 0)
        sample(s, c, name, sl_status_type_name(type), node->cfg.name,
               type == SL_NODE_OPERATOR ? i : -1, v);
    }
  }
}

/* The latency histogram of every instance of the nodes of one type. */
static void per_instance_latency(sl_text_t *s, sl_core_t *c, int type,
                                 const char *name, const char *help) {
  const sl_plan_t *p = c->plan;
  metric_head(s, name, "histogram", help);
  for (int n = 0; n < p->n_nodes; n++) {
    const sl_plan_node_t *node = &p->nodes[n];
    if (node->type != type)
      continue;
    for (int i = 0; i < node->parallelism; i++)
      histo_samples(s, c, name, sl_status_type_name(type), node->cfg.name,
                    type == SL_NODE_OPERATOR ? i : -1,
                    &c->insts[node->first_gid + i].latency);
  }
}

static double busy_s(sl_core_t *c, int g) {
  return (double)relaxed(&c->insts[g].busy_ns) / 1e9;
}
static double src_out(sl_core_t *c, int g) {
  return c->insts[g].source ? (double)c->insts[g].source->records_out : 0;
}
static double src_errors(sl_core_t *c, int g) {
  return c->insts[g].source ? (double)c->insts[g].source->errors : 0;
}
static double src_offset(sl_core_t *c, int g) {
  sl_source_t *s = c->insts[g].source;
  if (!s || !s->vt->offset)
    return -1;
  int64_t off = s->vt->offset(s);
  return off < 0 ? -1 : (double)off;
}
/* A source's lag in `unit` (one metric per unit), or -1 to leave it out. */
static double src_lag_in(sl_core_t *c, int g, const char *unit) {
  sl_source_t *s = c->insts[g].source;
  if (!s || !s->vt->lag || strcmp(s->vt->lag_unit, unit))
    return -1;
  if (s->ended && !s->vt->position)
    return 0;
  int64_t lag = s->vt->lag(s);
  return lag < 0 ? -1 : (double)lag;
}
static double src_lag_bytes(sl_core_t *c, int g) {
  return src_lag_in(c, g, "bytes");
}
static double src_lag_records(sl_core_t *c, int g) {
  return src_lag_in(c, g, "records");
}
static double sink_in(sl_core_t *c, int g) {
  return c->insts[g].sink ? (double)c->insts[g].sink->records_in : 0;
}
static double sink_errors(sl_core_t *c, int g) {
  return c->insts[g].sink ? (double)c->insts[g].sink->errors : 0;
}
static double op_in(sl_core_t *c, int g) {
  return (double)relaxed(&c->insts[g].pub_in);
}
static double op_out(sl_core_t *c, int g) {
  return (double)relaxed(&c->insts[g].pub_out);
}
static double op_errors(sl_core_t *c, int g) {
  return (double)relaxed(&c->insts[g].pub_errors);
}
static double op_dead(sl_core_t *c, int g) {
  return (double)relaxed(&c->insts[g].pub_dead);
}
static double op_queue(sl_core_t *c, int g) {
  const sl_plan_inst_t *pi = &c->plan->insts[g];
  size_t n = 0;
  for (int i = 0; i < pi->n_in_ch; i++)
    n += sl_ring_count(c->chans[pi->in_ch[i]].ring);
  return (double)n;
}
static double op_queue_cap(sl_core_t *c, int g) {
  const sl_plan_inst_t *pi = &c->plan->insts[g];
  size_t n = 0;
  for (int i = 0; i < pi->n_in_ch; i++)
    n += sl_ring_capacity(c->chans[pi->in_ch[i]].ring);
  return (double)n;
}

/* Of the process: up, uptime, conf reloads, log events. */
static void process_metrics(sl_text_t *s, sl_core_t *c) {
  metric_head(s, "up", "gauge",
              "1 while the pipeline runs (GET /health is 200)");
  sample(s, c, "up", NULL, NULL, -1, sl_status_running(c));
  metric_head(s, "uptime_seconds", "gauge", "Seconds since this run started");
  sample(s, c, "uptime_seconds", NULL, NULL, -1,
         c->started_ms > 0 ? (sl_now_ms() - c->started_ms) / 1000.0 : 0);
  const sl_conf_reloads_t *cr = c->conf_reloads;
  metric_head(s, "conf_reloads_total", "counter",
              "Conf changes by result: ok = valid, the pipeline restarted "
              "from a savepoint; failed = invalid, it carried on (counted "
              "across those restarts)");
  sample(s, c, "conf_reloads_total", "result", "ok", -1,
         cr ? (double)cr->ok : 0);
  sample(s, c, "conf_reloads_total", "result", "failed", -1,
         cr ? (double)cr->failed : 0);
  metric_head(s, "log_events_total", "counter",
              "WARN and ERROR log events of the process (GET /status lists "
              "the last 16)");
  sample(s, c, "log_events_total", "level", "warn", -1,
         (double)sl_log_count(SL_LOG_WARN));
  sample(s, c, "log_events_total", "level", "error", -1,
         (double)sl_log_count(SL_LOG_ERROR));
}

/* Per source, operator instance and sink; Lua memory per worker. */
static void node_metrics(sl_text_t *s, sl_core_t *c) {
  const sl_plan_t *p = c->plan;
  per_instance(s, c, SL_NODE_SOURCE, "source_records_out_total", "counter",
               "Records a source emitted", src_out);
  per_instance(s, c, SL_NODE_SOURCE, "source_errors_total", "counter",
               "Records or reads a source rejected", src_errors);
  per_instance(
      s, c, SL_NODE_SOURCE, "source_offset", "gauge",
      "A replayable source's position (file: bytes; generator: records)",
      src_offset);
  per_instance(s, c, SL_NODE_SOURCE, "source_lag_bytes", "gauge",
               "Bytes available to a source but not read yet (file: its size "
               "past the offset)",
               src_lag_bytes);
  per_instance(s, c, SL_NODE_SOURCE, "source_lag_records", "gauge",
               "Records available to a source but not read yet (a bounded "
               "generator's rest; a Redis Stream's entries not yet delivered "
               "to the group, XINFO GROUPS lag, refreshed every second)",
               src_lag_records);
  per_instance(s, c, SL_NODE_SINK, "sink_records_in_total", "counter",
               "Records a sink received", sink_in);
  per_instance(s, c, SL_NODE_SINK, "sink_errors_total", "counter",
               "Records a sink could not write", sink_errors);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_records_in_total", "counter",
               "Records an operator instance processed (published by its "
               "worker every 100 ms while busy)",
               op_in);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_records_out_total", "counter",
               "Records an operator instance emitted", op_out);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_errors_total", "counter",
               "Errors raised by an operator instance's process", op_errors);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_dead_letters_total", "counter",
               "Records an operator instance sent to its dead-letter sink",
               op_dead);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_queue_batches", "gauge",
               "Batches waiting in an operator instance's input rings",
               op_queue);
  per_instance(s, c, SL_NODE_OPERATOR, "operator_queue_capacity_batches",
               "gauge", "Capacity of an operator instance's input rings",
               op_queue_cap);
  per_instance_latency(
      s, c, SL_NODE_OPERATOR, "operator_latency_seconds",
      "Per record: from the creation of the batch it came in (by a source, "
      "or an upstream's flush; for records a same-worker upstream hands over, "
      "the batch that upstream was processing) to the end of its processing "
      "by this instance");
  per_instance(s, c, SL_NODE_OPERATOR, "operator_busy_seconds_total", "counter",
               "Time an operator instance spent processing (including, for "
               "channel batches, the same-worker operators it ran)",
               busy_s);
  per_instance_latency(s, c, SL_NODE_SINK, "sink_latency_seconds",
                       "Per record: from its batch's creation by the producer "
                       "to its hand-over to the sink's writer");
  per_instance(s, c, SL_NODE_SINK, "sink_busy_seconds_total", "counter",
               "Time a sink spent in its writer", busy_s);
  metric_head(s, "worker_lua_memory_bytes", "gauge",
              "Memory of a worker's Lua state (published with the counts)");
  for (int t = 1; c->workers && t <= p->workers; t++)
    if (c->workers[t]) {
      char w[16];
      snprintf(w, sizeof w, "%d", t);
      sample(s, c, "worker_lua_memory_bytes", "worker", w, -1,
             (double)sl_worker_lua_bytes(c->workers[t]));
    }
}

/* The checkpoint coordinator's. */
static void checkpoint_metrics(sl_text_t *s, sl_core_t *c) {
  sl_checkpoint_stats_t ck;
  sl_checkpoint_stats(c, &ck);
  metric_head(s, "checkpoints_completed_total", "counter",
              "Checkpoints stored (including the final one)");
  sample(s, c, "checkpoints_completed_total", NULL, NULL, -1,
         (double)ck.completed);
  metric_head(s, "checkpoints_failed_total", "counter",
              "Checkpoints abandoned or that could not be stored");
  sample(s, c, "checkpoints_failed_total", NULL, NULL, -1, (double)ck.failed);
  metric_head(s, "checkpoint_last_id", "gauge",
              "Id of the last completed checkpoint");
  sample(s, c, "checkpoint_last_id", NULL, NULL, -1, (double)ck.last_id);
  metric_head(s, "checkpoint_last_duration_seconds", "gauge",
              "From barrier injection to stored, of the last checkpoint");
  sample(s, c, "checkpoint_last_duration_seconds", NULL, NULL, -1,
         ck.last_duration_ms / 1000.0);
  metric_head(s, "checkpoint_last_size_bytes", "gauge",
              "Size of the last checkpoint's image");
  sample(s, c, "checkpoint_last_size_bytes", NULL, NULL, -1,
         (double)ck.last_bytes);
  metric_head(s, "checkpoint_last_timestamp_seconds", "gauge",
              "When the last checkpoint completed (Unix time)");
  sample(s, c, "checkpoint_last_timestamp_seconds", NULL, NULL, -1,
         ck.last_time_ms / 1000.0);
}

/* Script hot reloads of this run. */
static void reload_metrics(sl_text_t *s, sl_core_t *c) {
  metric_head(s, "reloads_total", "counter", "Script hot reloads by result");
  sample(s, c, "reloads_total", "result", "ok", -1, (double)c->reloads_ok);
  sample(s, c, "reloads_total", "result", "failed", -1,
         (double)c->reloads_failed);
}

void sl_metrics_render(sl_core_t *c, sl_text_t *out) {
  process_metrics(out, c);
  /* while restoring, the restore's thread builds the coordinator and the
   * sinks: only the process's own figures */
  if (c->restoring)
    return;
  node_metrics(out, c);
  checkpoint_metrics(out, c);
  reload_metrics(out, c);
}
