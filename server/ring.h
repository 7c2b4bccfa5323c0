/* ring.h - bounded lock-free single-producer/single-consumer ring of pointers.
 *
 * One thread pushes, one other thread pops; no locks. Capacity is rounded up
 * to a power of two. The ring stores pointers and owns nothing: whoever pops
 * a pointer owns what it points to.
 */
#ifndef SL_RING_H
#define SL_RING_H

#include <stddef.h>

typedef struct sl_ring_s sl_ring_t;

/* Creates a ring holding at least `capacity` (>= 1) pointers; NULL on OOM. */
sl_ring_t *sl_ring_create(size_t capacity);
void sl_ring_destroy(sl_ring_t *r);

/* Producer side. Returns 0 on success, -1 when full. `p` must not be NULL. */
int sl_ring_push(sl_ring_t *r, void *p);
/* Consumer side. Returns the oldest pointer, or NULL when empty. */
void *sl_ring_pop(sl_ring_t *r);
/* Either side: a snapshot of how many pointers are queued, and the capacity. */
size_t sl_ring_count(const sl_ring_t *r);
size_t sl_ring_capacity(const sl_ring_t *r);

#endif
