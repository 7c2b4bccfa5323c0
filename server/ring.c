/* ring.c - bounded lock-free SPSC ring of pointers (see ring.h).
 *
 * Owns: the slot array and the two indices. Threads: exactly one producer
 * thread calls sl_ring_push and exactly one consumer thread calls
 * sl_ring_pop; either may call sl_ring_count/capacity; create and destroy run
 * while no other thread uses the ring.
 *
 * `tail` (next slot to write) is written only by the producer, `head` (next
 * slot to read) only by the consumer. Both grow without bound (a size_t never
 * wraps in practice on 64-bit; on 32-bit, unsigned wrap-around keeps
 * `tail - head` right) and index the slots modulo the power-of-two capacity.
 * The producer stores a slot, then publishes it with a release store of
 * `tail`; the consumer reads `tail` with acquire before reading the slot, and
 * publishes the freed slot with a release store of `head`. Each side also
 * keeps a private cached copy of the other side's index so that the shared
 * cache line is only read when the ring looks full (or empty). Producer and
 * consumer fields live on separate cache lines to avoid false sharing.
 */
#include "ring.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define SL_RING_LINE 64

struct sl_ring_s {
  /* producer's line */
  alignas(SL_RING_LINE) _Atomic size_t tail;
  size_t head_cache; /* producer's last view of head */
  /* consumer's line */
  alignas(SL_RING_LINE) _Atomic size_t head;
  size_t tail_cache; /* consumer's last view of tail */
  /* read-only after create */
  alignas(SL_RING_LINE) size_t mask;
  void **slots;
};

static size_t sl_ring_round_pow2(size_t n) {
  size_t c = 1;
  while (c < n)
    c <<= 1;
  return c;
}

sl_ring_t *sl_ring_create(size_t capacity) {
  if (capacity == 0)
    capacity = 1;
  if (capacity > (SIZE_MAX / 2) / sizeof(void *))
    return NULL;
  size_t cap = sl_ring_round_pow2(capacity);
  sl_ring_t *r = aligned_alloc(SL_RING_LINE, sizeof(*r));
  if (!r)
    return NULL;
  r->slots = calloc(cap, sizeof(void *));
  if (!r->slots) {
    free(r);
    return NULL;
  }
  r->mask = cap - 1;
  atomic_init(&r->tail, 0);
  atomic_init(&r->head, 0);
  r->head_cache = 0;
  r->tail_cache = 0;
  return r;
}

void sl_ring_destroy(sl_ring_t *r) {
  if (!r)
    return;
  free(r->slots);
  free(r);
}

int sl_ring_push(sl_ring_t *r, void *p) {
  size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  if (tail - r->head_cache > r->mask) {
    r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail - r->head_cache > r->mask)
      return -1;
  }
  r->slots[tail & r->mask] = p;
  atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
  return 0;
}

void *sl_ring_pop(sl_ring_t *r) {
  size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  if (head == r->tail_cache) {
    r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (head == r->tail_cache)
      return NULL;
  }
  void *p = r->slots[head & r->mask];
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
  return p;
}

size_t sl_ring_count(const sl_ring_t *r) {
  /* head first: tail read afterwards is never behind it */
  size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  size_t n = tail - head;
  return n > r->mask + 1 ? r->mask + 1 : n;
}

size_t sl_ring_capacity(const sl_ring_t *r) {
  return r->mask + 1;
}
