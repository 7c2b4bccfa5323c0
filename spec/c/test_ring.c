/* test_ring.c - sl_ring: single-thread semantics (full, empty, wrap-around,
 * capacity rounding) and a two-thread run of 10M sequenced pointers checked
 * for order. Runs on the main thread plus one producer thread it starts.
 */
#include "check.h"
#include "ring.h"

#include <pthread.h>
#include <stdint.h>

#define P(i) ((void *)(uintptr_t)(i))
#define N_SEQ 10000000

static void test_capacity(void) {
  size_t caps[][2] = {{0, 1}, {1, 1},       {2, 2},
                      {3, 4}, {1000, 1024}, {1024, 1024}};
  for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
    sl_ring_t *r = sl_ring_create(caps[i][0]);
    CHECK(r != NULL);
    CHECK_EQ_INT(sl_ring_capacity(r), caps[i][1]);
    CHECK_EQ_INT(sl_ring_count(r), 0);
    sl_ring_destroy(r);
  }
  CHECK(sl_ring_create(SIZE_MAX) == NULL);
  sl_ring_destroy(NULL);
}

static void test_full_empty(void) {
  sl_ring_t *r = sl_ring_create(4);
  CHECK(r != NULL);
  CHECK(sl_ring_pop(r) == NULL);
  for (uintptr_t i = 1; i <= 4; i++)
    CHECK_EQ_INT(sl_ring_push(r, P(i)), 0);
  CHECK_EQ_INT(sl_ring_count(r), 4);
  CHECK_EQ_INT(sl_ring_push(r, P(5)), -1);
  CHECK_EQ_INT(sl_ring_count(r), 4);
  for (uintptr_t i = 1; i <= 4; i++)
    CHECK(sl_ring_pop(r) == P(i));
  CHECK(sl_ring_pop(r) == NULL);
  CHECK_EQ_INT(sl_ring_count(r), 0);
  sl_ring_destroy(r);
}

static void test_wrap(void) {
  sl_ring_t *r = sl_ring_create(3); /* capacity 4 */
  uintptr_t in = 1, out = 1;
  for (int round = 0; round < 1000; round++) {
    int k = 1 + round % 4;
    for (int j = 0; j < k; j++)
      CHECK_EQ_INT(sl_ring_push(r, P(in++)), 0);
    CHECK_EQ_INT(sl_ring_count(r), (size_t)k);
    for (int j = 0; j < k; j++)
      CHECK(sl_ring_pop(r) == P(out++));
    CHECK(sl_ring_pop(r) == NULL);
  }
  /* interleaved: keep the ring partly full across many wraps */
  CHECK_EQ_INT(sl_ring_push(r, P(in++)), 0);
  CHECK_EQ_INT(sl_ring_push(r, P(in++)), 0);
  for (int i = 0; i < 1000; i++) {
    CHECK_EQ_INT(sl_ring_push(r, P(in++)), 0);
    CHECK(sl_ring_pop(r) == P(out++));
    CHECK_EQ_INT(sl_ring_count(r), 2);
  }
  sl_ring_destroy(r);
}

typedef struct {
  sl_ring_t *r;
  uintptr_t n;
} run_t;

static void *producer(void *arg) {
  run_t *run = arg;
  sl_ring_t *r = run->r;
  for (uintptr_t i = 1; i <= run->n; i++)
    while (sl_ring_push(r, P(i)) < 0)
      ;
  return NULL;
}

static void test_two_threads(size_t cap, uintptr_t n) {
  sl_ring_t *r = sl_ring_create(cap);
  CHECK(r != NULL);
  run_t run = {r, n};
  pthread_t t;
  CHECK_EQ_INT(pthread_create(&t, NULL, producer, &run), 0);
  uintptr_t expect = 1, bad = 0;
  while (expect <= n) {
    void *p = sl_ring_pop(r);
    if (!p)
      continue;
    if (p != P(expect))
      bad++;
    if ((expect++ & 1023) == 0 && sl_ring_count(r) > sl_ring_capacity(r))
      bad++;
  }
  CHECK_EQ_INT(pthread_join(t, NULL), 0);
  CHECK_EQ_INT(bad, 0);
  CHECK(sl_ring_pop(r) == NULL);
  sl_ring_destroy(r);
}

int main(void) {
  test_capacity();
  test_full_empty();
  test_wrap();
  test_two_threads(1024, N_SEQ);
  /* tiny ring: every push and pop sees it full or empty */
  test_two_threads(2, N_SEQ / 10);
  return CHECK_DONE();
}
