/* plan.h - the pipeline's topology, as the C core sees it.
 *
 * sl_plan_load runs bindings/sluice/conf.lua in a control Lua state on the
 * main thread: it evaluates the conf in a sandbox, validates it, compiles
 * every script and lays the pipeline out (nodes, instances, channels; see
 * docs/architecture.md). This file copies what the core needs into plain C
 * arrays, and keeps the encoded plan that every worker's Lua state decodes.
 * A plan is immutable once loaded and is read by every thread.
 */
#ifndef SL_PLAN_H
#define SL_PLAN_H

#include "endpoint.h"

typedef enum { SL_NODE_SOURCE, SL_NODE_OPERATOR, SL_NODE_SINK } sl_node_type_t;
typedef enum {
  SL_GROUP_SHUFFLE,
  SL_GROUP_KEY,
  SL_GROUP_BROADCAST,
  SL_GROUP_FORWARD
} sl_grouping_t;

typedef struct sl_plan_node_s {
  int id;
  int type; /* sl_node_type_t */
  int parallelism, first_gid;
  sl_node_cfg_t cfg; /* name, kind and the source/sink settings */
  char *script;      /* operators: the script's absolute path */
  char *chunkname;   /* operators: "@" + the path as errors show it */
  int grouping;      /* operators: sl_grouping_t of their inputs */
} sl_plan_node_t;

/* One downstream edge of an instance. */
typedef struct sl_plan_out_s {
  int grouping; /* sl_grouping_t */
  int n_ch;     /* channels, by downstream instance index */
  int *ch;
} sl_plan_out_t;

typedef struct sl_plan_inst_s {
  int gid, node, index, thread;
  int n_inputs; /* in-channels + chained inputs: END markers to wait for */
  int n_in_ch, *in_ch;
  int n_chained_to, *chained_to; /* forward-chained downstream gids */
  int n_outs;
  sl_plan_out_t *outs;
  int n_out_ch, *out_ch; /* every out channel (outs + dead letter) */
  /* out channels of this instance and of everything chained below it: the
   * instance is blocked while any of them has an overflow */
  int n_block_ch, *block_ch;
} sl_plan_inst_t;

typedef struct sl_plan_chan_s {
  int cid, from, to, producer, consumer;
} sl_plan_chan_t;

typedef struct sl_plan_s {
  char *file, *name, *guarantee, *describe;
  int workers, threads, max_parallelism;
  int n_nodes, n_insts, n_chans;
  sl_plan_node_t *nodes;
  sl_plan_inst_t *insts;
  sl_plan_chan_t *chans;
  /* checkpointing: ckpt_store NULL when the conf has no checkpoint block */
  char *ckpt_store;
  double ckpt_every_ms, ckpt_timeout_ms, ckpt_connect_ms;
  int ckpt_keep;
  int ckpt_implicit; /* no checkpoint block: a memory store for savepoints */
  int exactly_once;  /* guarantee == exactly_once (with checkpoints) */
  char *admin;       /* "HOST:PORT" of the admin HTTP server, or NULL */
  char *blob;        /* string.buffer-encoded plan table for the workers */
  size_t blob_len;
} sl_plan_t;

/* Loads and validates `path`. workers > 0 overrides the conf. On success
 * returns 0 and *out (free with sl_plan_destroy). On a bad conf returns 1
 * and *errors: "FILE:LINE: message" lines joined by '\n' (caller frees). On
 * an internal failure returns -1 and *errors says why. */
int sl_plan_load(const char *path, int workers, sl_plan_t **out, char **errors);
void sl_plan_destroy(sl_plan_t *p);

#endif
