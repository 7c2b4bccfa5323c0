/* test_channel.c - the channel's back-pressure protocol: a full ring parks
 * batches in the producer's overflow, the consumer's pop wakes the producer
 * once it asked for room, a drain moves the overflow back in order, and
 * batches come out in the order they were pushed, across two threads.
 */
#include "channel.h"
#include "check.h"

#include <stdint.h>
#include <uv.h>

static int wakes_producer, wakes_consumer;

static void on_producer(uv_async_t *a) {
  (void)a;
  wakes_producer++;
}
static void on_consumer(uv_async_t *a) {
  (void)a;
  wakes_consumer++;
}

static sl_batch_t *numbered(uint32_t n) {
  sl_batch_t *b = sl_batch_create(SL_BATCH_DATA, &n, sizeof n, 1);
  CHECK(b != NULL);
  return b;
}

static uint32_t number_of(sl_batch_t *b) {
  uint32_t n;
  memcpy(&n, b->data, sizeof n);
  return n;
}

static void test_overflow(void) {
  uv_loop_t loop;
  uv_async_t prod, cons;
  uv_loop_init(&loop);
  uv_async_init(&loop, &prod, on_producer);
  uv_async_init(&loop, &cons, on_consumer);
  sl_channel_t ch;
  CHECK_EQ_INT(sl_channel_init(&ch, 0, 4), 0);
  ch.producer_wake = &prod;
  ch.consumer_wake = &cons;
  for (uint32_t i = 0; i < 10; i++)
    sl_channel_push(&ch, numbered(i));
  CHECK(!sl_channel_clear(&ch)); /* 4 in the ring, 6 parked */
  CHECK_EQ_INT(atomic_load(&ch.want_space), 1);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(wakes_consumer >= 1);
  uint32_t next = 0;
  sl_batch_t *b = sl_channel_pop(&ch);
  CHECK_EQ_INT(number_of(b), next++);
  sl_batch_destroy(b);
  CHECK_EQ_INT(atomic_load(&ch.want_space), 0); /* the pop asked for a wake */
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(wakes_producer, 1);
  while (next < 10) {
    sl_channel_drain(&ch);
    while ((b = sl_channel_pop(&ch))) {
      CHECK_EQ_INT(number_of(b), next++);
      sl_batch_destroy(b);
    }
  }
  CHECK(sl_channel_clear(&ch));
  sl_channel_push(&ch, numbered(99)); /* left queued: close frees it */
  sl_channel_close(&ch);
  uv_close((uv_handle_t *)&prod, NULL);
  uv_close((uv_handle_t *)&cons, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* Two threads: the producer pushes N batches, parking and draining as the
 * ring fills; the consumer checks order. No wake handles: both spin. */
#define N 200000
static sl_channel_t shared;

static void consumer(void *arg) {
  uint32_t *bad = arg;
  for (uint32_t next = 0; next < N;) {
    sl_batch_t *b = sl_channel_pop(&shared);
    if (!b)
      continue;
    if (number_of(b) != next)
      (*bad)++;
    next++;
    sl_batch_destroy(b);
  }
}

static void test_threads(void) {
  uint32_t bad = 0;
  CHECK_EQ_INT(sl_channel_init(&shared, 1, 16), 0);
  uv_thread_t t;
  uv_thread_create(&t, consumer, &bad);
  for (uint32_t i = 0; i < N; i++) {
    sl_channel_push(&shared, numbered(i));
    if (!sl_channel_clear(&shared))
      sl_channel_drain(&shared);
  }
  while (!sl_channel_clear(&shared))
    sl_channel_drain(&shared);
  uv_thread_join(&t);
  CHECK_EQ_INT(bad, 0);
  sl_channel_close(&shared);
}

int main(void) {
  test_overflow();
  test_threads();
  return CHECK_DONE();
}
