/* channel.c - a one-way link between two instances (see channel.h).
 *
 * Wake-ups: a producer always wakes the consumer's thread after a push (the
 * uv_async_send is coalesced by libuv while one is pending). A producer with
 * an overflow raises want_space, then retries; the consumer clears it after
 * a pop and wakes the producer. Both sides use sequentially consistent
 * operations on want_space and the ring's indices, so either the producer's
 * retry sees the freed slot or the consumer sees want_space: no lost wake-up.
 */
#include "channel.h"

#include <stdlib.h>

int sl_channel_init(sl_channel_t *c, int cid, size_t capacity) {
  c->ring = sl_ring_create(capacity);
  c->ovf_head = c->ovf_tail = NULL;
  atomic_init(&c->want_space, 0);
  c->producer_wake = c->consumer_wake = NULL;
  c->cid = cid;
  c->records = 0;
  return c->ring ? 0 : -1;
}

void sl_channel_close(sl_channel_t *c) {
  sl_batch_t *b;
  while (c->ring && (b = sl_ring_pop(c->ring)))
    sl_batch_destroy(b);
  while ((b = c->ovf_head)) {
    c->ovf_head = b->next;
    sl_batch_destroy(b);
  }
  c->ovf_tail = NULL;
  sl_ring_destroy(c->ring);
  c->ring = NULL;
}

static void wake(uv_async_t *a) {
  if (a)
    uv_async_send(a);
}

int sl_channel_drain(sl_channel_t *c) {
  int moved = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    while (c->ovf_head) {
      sl_batch_t *b = c->ovf_head, *next = b->next;
      b->next = NULL; /* once pushed, b belongs to the consumer */
      if (sl_ring_push(c->ring, b)) {
        b->next = next;
        break;
      }
      c->ovf_head = next;
      moved = 1;
    }
    if (!c->ovf_head) {
      c->ovf_tail = NULL;
      break;
    }
    /* Still full: ask to be woken, then look once more (see above). */
    atomic_store(&c->want_space, 1);
    atomic_thread_fence(memory_order_seq_cst);
  }
  if (moved)
    wake(c->consumer_wake);
  return c->ovf_head == NULL;
}

void sl_channel_push(sl_channel_t *c, sl_batch_t *b) {
  b->next = NULL;
  c->records += b->nrec;
  if (!c->ovf_head && sl_ring_push(c->ring, b) == 0) {
    wake(c->consumer_wake);
    return;
  }
  if (c->ovf_tail)
    c->ovf_tail->next = b;
  else
    c->ovf_head = b;
  c->ovf_tail = b;
  sl_channel_drain(c);
}

sl_batch_t *sl_channel_pop(sl_channel_t *c) {
  sl_batch_t *b = sl_ring_pop(c->ring);
  if (b) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&c->want_space) && atomic_exchange(&c->want_space, 0))
      wake(c->producer_wake);
  }
  return b;
}
