/* test_histo.c - sl_histo_*: bucket choice at and around the bounds,
 * cumulative reads, weighted observations, the sum. Single-threaded.
 */
#include "check.h"
#include "histo.h"

int main(void) {
  sl_histo_t h;
  sl_histo_init(&h);
  sl_histo_snap_t s;
  sl_histo_read(&h, &s);
  CHECK_EQ_INT(s.count, 0);
  CHECK_EQ_INT(s.cum[SL_HISTO_BUCKETS - 1], 0);

  /* bounds ascend; a value equal to a bound is in that bucket (le) */
  for (int i = 1; i < SL_HISTO_BUCKETS; i++)
    CHECK(sl_histo_bound_ns(i) > sl_histo_bound_ns(i - 1));
  CHECK_EQ_INT(sl_histo_bound_ns(0), 50000);
  CHECK_EQ_INT(sl_histo_bound_ns(SL_HISTO_BUCKETS - 1), 10000000000ull);
  sl_histo_observe(&h, sl_histo_bound_ns(3), 1);     /* bucket 3 */
  sl_histo_observe(&h, sl_histo_bound_ns(3) + 1, 2); /* bucket 4, twice */
  sl_histo_observe(&h, 0, 5);                        /* bucket 0 */
  sl_histo_observe(&h, 20000000000ull, 1);           /* +Inf only */
  sl_histo_observe(&h, 123, 0);                      /* nothing */
  sl_histo_read(&h, &s);
  CHECK_EQ_INT(s.cum[0], 5);
  CHECK_EQ_INT(s.cum[2], 5);
  CHECK_EQ_INT(s.cum[3], 6);
  CHECK_EQ_INT(s.cum[4], 8);
  CHECK_EQ_INT(s.cum[SL_HISTO_BUCKETS - 1], 8);
  CHECK_EQ_INT(s.count, 9);
  double want = (500000.0 + 2 * 500001.0 + 20e9) / 1e9;
  CHECK(s.sum_s > want - 1e-9 && s.sum_s < want + 1e-9);
  /* cumulative buckets never decrease */
  for (int i = 1; i < SL_HISTO_BUCKETS; i++)
    CHECK(s.cum[i] >= s.cum[i - 1]);
  return CHECK_DONE();
}
