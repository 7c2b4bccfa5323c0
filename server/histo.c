/* histo.c - fixed-bucket latency histograms (see histo.h).
 *
 * Owns no memory: a histogram lives inside whatever owns the thing measured
 * (an operator instance's runtime record, core.h). Observing costs a short
 * scan of 16 bounds and two relaxed load/store pairs: it is done once per
 * batch, never per record.
 */
#include "histo.h"

#include <string.h>

/* 50 us .. 10 s, roughly 1-2.5-5 per decade. */
static const uint64_t bounds_ns[SL_HISTO_BUCKETS] = {
    50000ull,     100000ull,     250000ull,     500000ull,
    1000000ull,   2500000ull,    5000000ull,    10000000ull,
    25000000ull,  50000000ull,   100000000ull,  250000000ull,
    500000000ull, 1000000000ull, 2500000000ull, 10000000000ull};

uint64_t sl_histo_bound_ns(int i) {
  return i >= 0 && i < SL_HISTO_BUCKETS ? bounds_ns[i] : UINT64_MAX;
}

void sl_histo_init(sl_histo_t *h) {
  memset(h, 0, sizeof *h);
}

/* Single writer: a relaxed load and store is an increment nobody races. */
void sl_counter_add(_Atomic uint64_t *v, uint64_t n) {
  atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

void sl_histo_observe(sl_histo_t *h, uint64_t ns, uint64_t n) {
  if (!n)
    return;
  int i = 0;
  while (i < SL_HISTO_BUCKETS && ns > bounds_ns[i])
    i++;
  sl_counter_add(&h->le[i], n); /* i == SL_HISTO_BUCKETS: over the top */
  sl_counter_add(&h->sum_ns, ns * n);
}

void sl_histo_read(const sl_histo_t *h, sl_histo_snap_t *out) {
  uint64_t cum = 0;
  for (int i = 0; i < SL_HISTO_BUCKETS; i++) {
    cum += atomic_load_explicit(&h->le[i], memory_order_relaxed);
    out->cum[i] = cum;
  }
  out->count = cum + atomic_load_explicit(&h->le[SL_HISTO_BUCKETS],
                                          memory_order_relaxed);
  out->sum_s =
      (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
}
