/* channel.h - a one-way link from one producer instance to one consumer
 * instance, each on its own thread (or both on one thread).
 *
 * A channel is a bounded SPSC ring of batches plus an overflow list. The
 * producing thread owns the overflow list; the ring is shared. A producer
 * that finds the ring full parks batches in the overflow (the producing
 * instance is then "blocked" and gets no more input) and raises want_space;
 * the consumer, after popping, wakes the producer's thread, which moves the
 * overflow into the ring. Memory therefore stays bounded: ring capacity plus
 * what one input batch produced.
 */
#ifndef SL_CHANNEL_H
#define SL_CHANNEL_H

#include "batch.h"
#include "ring.h"

#include <stdatomic.h>
#include <uv.h>

typedef struct sl_channel_s {
  sl_ring_t *ring;
  sl_batch_t *ovf_head, *ovf_tail; /* producer thread only */
  atomic_int want_space;           /* producer waits for room */
  uv_async_t *producer_wake, *consumer_wake;
  int cid, from, to;
  uint64_t records; /* records pushed (producer thread only) */
} sl_channel_t;

/* capacity: batches in the ring. 0 ok, -1 OOM. */
int sl_channel_init(sl_channel_t *c, int cid, size_t capacity);
/* Frees queued batches and the ring. */
void sl_channel_close(sl_channel_t *c);

/* Producer: takes ownership of b; into the ring, else the overflow. */
void sl_channel_push(sl_channel_t *c, sl_batch_t *b);
/* Producer: moves overflow into the ring; 1 when the overflow is empty. */
int sl_channel_drain(sl_channel_t *c);
/* Producer: nothing parked in the overflow. */
static inline int sl_channel_clear(const sl_channel_t *c) {
  return c->ovf_head == NULL;
}
/* Consumer: the oldest batch (caller owns it), or NULL. */
sl_batch_t *sl_channel_pop(sl_channel_t *c);

#endif
