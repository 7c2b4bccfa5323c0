/* batch.c - allocating and freeing batches (see batch.h).
 *
 * Owns nothing beyond each batch's single heap block. Any thread: a batch is
 * created by its producer's thread and destroyed by its consumer's thread.
 */
#include "batch.h"

#include <uv.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

sl_batch_t *sl_batch_create(uint32_t kind, const void *data, size_t len,
                            uint32_t nrec) {
  if (len > SIZE_MAX - sizeof(sl_batch_t))
    return NULL;
  sl_batch_t *b = malloc(sizeof(sl_batch_t) + len);
  if (!b)
    return NULL;
  b->next = NULL;
  b->kind = kind;
  b->nrec = nrec;
  b->closing = 0;
  b->id = 0;
  b->t_ns = uv_hrtime();
  b->len = len;
  if (len)
    memcpy(b->data, data, len);
  return b;
}

void sl_batch_destroy(sl_batch_t *b) {
  free(b);
}
