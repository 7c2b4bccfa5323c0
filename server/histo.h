/* histo.h - a fixed-bucket latency histogram, one writer, many readers.
 *
 * The buckets are Prometheus's cumulative `le` bounds, fixed for every
 * histogram (SL_HISTO_BOUNDS_NS, 50 us to 10 s), so that a histogram is a
 * plain array of counters: no allocation, nothing to create or destroy
 * beyond zeroing it. One thread observes (the thread that owns the
 * instance); any thread may read with sl_histo_read. The counters are
 * relaxed atomics: a reader sees each one whole (a scrape is a snapshot of
 * counters that only grow, not a transaction; the count is the buckets'
 * total, so it always agrees with them).
 */
#ifndef SL_HISTO_H
#define SL_HISTO_H

#include <stdatomic.h>
#include <stdint.h>

#define SL_HISTO_BUCKETS 16 /* finite bounds; +Inf is `count` */

typedef struct sl_histo_s {
  /* NOT cumulative: this bucket only; [SL_HISTO_BUCKETS] is over the top
   * bound. Their total is the count. */
  _Atomic uint64_t le[SL_HISTO_BUCKETS + 1];
  _Atomic uint64_t sum_ns; /* the observations' sum */
} sl_histo_t;

/* The upper bound of bucket i, in nanoseconds (i < SL_HISTO_BUCKETS). */
uint64_t sl_histo_bound_ns(int i);
/* Zeroes h (before any thread uses it). */
void sl_histo_init(sl_histo_t *h);
/* Owner thread: `n` observations of `ns` nanoseconds each. */
void sl_histo_observe(sl_histo_t *h, uint64_t ns, uint64_t n);

/* Owner thread: adds n to a single-writer counter (relaxed load + store). */
void sl_counter_add(_Atomic uint64_t *v, uint64_t n);

/* A reader's copy, with cumulative buckets as Prometheus wants them. */
typedef struct sl_histo_snap_s {
  uint64_t cum[SL_HISTO_BUCKETS]; /* observations <= bound i */
  uint64_t count;
  double sum_s;
} sl_histo_snap_t;
/* Any thread. count is the total of the buckets, +Inf included. */
void sl_histo_read(const sl_histo_t *h, sl_histo_snap_t *out);

#endif
