/* checkpoint.h - the checkpoint coordinator (I/O thread).
 *
 * Every `every` ms the coordinator starts checkpoint n: it records each
 * source's replay offset and injects barrier n behind the source's records.
 * Operator instances (worker threads) snapshot their keyed state when the
 * barrier has arrived from all their inputs, and sinks pre-commit; each
 * sends an ack (sl_checkpoint_ack, any thread). When every instance and sink
 * has acked, the coordinator encodes the image (ckpt.h), stores it on a libuv
 * work thread (store.h: image first, `latest` last), and then tells the
 * committing sinks to publish. A checkpoint that does not complete within
 * `timeout` is abandoned; the next one proceeds. The end of the input (or a
 * stop) is a final checkpoint: END markers act as its barrier.
 */
#ifndef SL_CHECKPOINT_H
#define SL_CHECKPOINT_H

#include "ckpt.h"
#include "core.h"

#include <stdint.h>

#define SL_CKPT_FINAL UINT64_MAX /* ack id of the snapshot taken at END */

/* One acknowledgement: an instance's key-group blobs, or a sink's state.
 * The coordinator takes ownership of the ack and everything in it. */
typedef struct sl_ack_part_s {
  int32_t kg; /* key group; -1 for a sink's state */
  uint8_t *blob;
  size_t len;
} sl_ack_part_t;

typedef struct sl_ack_s {
  struct sl_ack_s *next;
  uint64_t id; /* barrier id, or SL_CKPT_FINAL */
  int gid;
  int n;
  sl_ack_part_t *parts;
} sl_ack_t;

sl_ack_t *sl_ack_create(uint64_t id, int gid, int nparts); /* NULL on OOM */
void sl_ack_destroy(sl_ack_t *a);

/* Opens the store and restores (main thread, before anything starts):
 * restore = "latest" (the default), "none" or a checkpoint id. Seeks the
 * sources, restores the sinks, and remembers each operator node's key-group
 * blobs for sl_checkpoint_restore_state. Returns 0, or an exit code (1 bad
 * --restore, 3 store failure), or -1 when the restored checkpoint is a
 * final one (the input was fully processed: nothing to run). */
int sl_checkpoint_open(sl_core_t *c, const char *restore);
/* The blobs of node `name` whose key group k satisfies
 * floor(k * parallelism / max_parallelism) == index. Owned by the
 * coordinator, valid until sl_checkpoint_release_restore. */
int sl_checkpoint_restore_state(sl_core_t *c, const char *name, int index,
                                int parallelism, const sl_ckpt_entry_t ***out,
                                int *n);
void sl_checkpoint_release_restore(sl_core_t *c);
/* Starts the timers (I/O thread loop is initialised). */
int sl_checkpoint_start(sl_core_t *c);
/* Any thread: hand over an ack, wake the I/O thread. */
void sl_checkpoint_ack(sl_core_t *c, sl_ack_t *a);
/* Does the pipeline take periodic checkpoints (a checkpoint block)? */
int sl_checkpoint_periodic(sl_core_t *c);
/* Is a checkpoint taken at END? (always with a checkpoint block; without
 * one, only for a conf reload's savepoint). Any thread. */
int sl_checkpoint_at_end(sl_core_t *c);
/* I/O thread: take in the acks; 1 while a final checkpoint is still owed. */
int sl_checkpoint_pump(sl_core_t *c);
/* A source reached its end (offset at the end) or stopped: remember it. */
void sl_checkpoint_source_ended(sl_core_t *c, int gid, int64_t offset,
                                int closing);
/* What a restored checkpoint says of a source (its offset, -1 = none) and
 * of a sink (its state entry, NULL = none). Main thread, at start. */
int64_t sl_checkpoint_source_offset(sl_core_t *c, int gid);
const sl_ckpt_entry_t *sl_checkpoint_source_entry(sl_core_t *c, int gid);
const sl_ckpt_entry_t *sl_checkpoint_sink_state(sl_core_t *c, int gid);
/* I/O thread: start a checkpoint at the next tick (within 100 ms), as if
 * `every` had passed (a hot reload waits for the next barrier). */
void sl_checkpoint_request(sl_core_t *c);
/* I/O thread (POST /checkpoint): start a checkpoint now. Returns its id
 * (the one in progress if there is one; the next one if the previous is
 * still being stored), or 0 when none can be taken (no periodic
 * checkpoints, stopping, a failure, every source ended). */
uint64_t sl_checkpoint_trigger(sl_core_t *c);
/* What the coordinator has done so far (I/O thread; zeros without one). */
typedef struct sl_checkpoint_stats_s {
  uint64_t completed, failed;
  uint64_t last_id;                      /* the last completed; 0 = none */
  double last_time_ms, last_duration_ms; /* its completion (epoch ms), cost */
  uint64_t last_bytes;                   /* its image's size */
  uint64_t pending;                      /* in progress; 0 = none */
} sl_checkpoint_stats_t;
void sl_checkpoint_stats(sl_core_t *c, sl_checkpoint_stats_t *out);
/* What became of checkpoint `id` (POST /checkpoint waits for it). The
 * coordinator keeps the last SL_CKPT_OUTCOMES decided ones, and wakes the
 * I/O thread when one is decided. */
#define SL_CKPT_OUTCOMES 16
typedef struct sl_checkpoint_outcome_s {
  uint64_t id;
  int state;          /* 1 stored, -1 failed or abandoned, 0 not yet */
  double duration_ms; /* from its start to the decision */
  uint64_t bytes;     /* the stored image's size */
  char why[200];      /* state -1: why */
} sl_checkpoint_outcome_t;
/* I/O thread: out->state, also returned. 0 while id is in progress or
 * still to start; -1 for an id never taken (the run stopped first). */
int sl_checkpoint_outcome(sl_core_t *c, uint64_t id,
                          sl_checkpoint_outcome_t *out);
void sl_checkpoint_stop(sl_core_t *c);  /* close timers (shutdown) */
void sl_checkpoint_close(sl_core_t *c); /* free (after the loop ended) */

#endif
