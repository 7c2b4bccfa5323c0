/* align.c - checkpoint barrier alignment, per instance.
 *
 * Flink's asynchronous barrier snapshotting: barrier n flows behind every
 * record a source emitted before checkpoint n. An instance with several
 * inputs (in-channels and chained upstreams) snapshots when barrier n has
 * arrived from every input. Under exactly_once it aligns: an input that has
 * delivered barrier n is not read again until the others catch up, so no
 * record after the barrier reaches the state before the snapshot; and an
 * upstream that calls this instance directly (chaining, local exchange) is
 * held back the same way. Under at_least_once inputs keep flowing (records
 * after the barrier may land in the snapshot and be replayed again after a
 * restore). An input that has ended counts as having delivered every later
 * barrier. A newer barrier than the one being aligned supersedes it (the
 * coordinator abandoned the older one).
 *
 * Each function runs on the thread that hosts the instance.
 */
#include "core.h"

#include <stdlib.h>

int sl_align_init(sl_core_t *c) {
  for (int g = 0; g < c->plan->n_insts; g++) {
    int n = c->plan->insts[g].n_in_ch;
    c->insts[g].align.in_state = calloc((size_t)n + 1, 1);
    if (!c->insts[g].align.in_state)
      return -1;
  }
  return 0;
}

void sl_align_free(sl_core_t *c) {
  for (int g = 0; c->insts && g < c->plan->n_insts; g++) {
    free(c->insts[g].align.in_state);
    c->insts[g].align.in_state = NULL;
  }
}

/* Every input has delivered the barrier or ended. */
static int complete(sl_core_t *c, int gid) {
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  const sl_align_t *a = &c->insts[gid].align;
  int n = a->chained_arrived + a->chained_ended;
  for (int i = 0; i < pi->n_in_ch; i++)
    n += a->in_state[i] != SL_IN_OPEN;
  return a->id != 0 && n >= pi->n_inputs;
}

/* Forget the arrivals of the barrier being aligned (ends stay). */
static void reset(sl_core_t *c, int gid) {
  sl_align_t *a = &c->insts[gid].align;
  for (int i = 0; i < c->plan->insts[gid].n_in_ch; i++)
    if (a->in_state[i] == SL_IN_ARRIVED)
      a->in_state[i] = SL_IN_OPEN;
  a->chained_arrived = 0;
  a->id = 0;
}

int sl_align_barrier(sl_core_t *c, int gid, int in_index, uint64_t id) {
  sl_align_t *a = &c->insts[gid].align;
  if (id <= a->forwarded || (a->id && id < a->id))
    return 0; /* stale: already passed on, or superseded */
  if (a->id && id > a->id)
    reset(c, gid);
  a->id = id;
  if (in_index < 0)
    a->chained_arrived++;
  else
    a->in_state[in_index] = SL_IN_ARRIVED;
  return complete(c, gid);
}

int sl_align_end(sl_core_t *c, int gid, int in_index) {
  sl_align_t *a = &c->insts[gid].align;
  if (in_index < 0)
    a->chained_ended++;
  else
    a->in_state[in_index] = SL_IN_ENDED;
  return complete(c, gid);
}

void sl_align_done(sl_core_t *c, int gid) {
  sl_align_t *a = &c->insts[gid].align;
  a->forwarded = a->id;
  reset(c, gid);
}

int sl_align_may_read(sl_core_t *c, int gid, int in_index) {
  const sl_align_t *a = &c->insts[gid].align;
  return !c->exact || a->in_state[in_index] != SL_IN_ARRIVED;
}

/* Is any instance chained below gid aligning a barrier <= passed? */
static int below_aligning(sl_core_t *c, int gid, uint64_t passed) {
  const sl_plan_inst_t *pi = &c->plan->insts[gid];
  for (int i = 0; i < pi->n_chained_to; i++) {
    int d = pi->chained_to[i];
    uint64_t id = c->insts[d].align.id;
    if ((id && id <= passed) || below_aligning(c, d, passed))
      return 1;
  }
  return 0;
}

int sl_align_held(sl_core_t *c, int gid) {
  uint64_t passed = c->insts[gid].align.forwarded;
  return c->exact && passed && below_aligning(c, gid, passed);
}
