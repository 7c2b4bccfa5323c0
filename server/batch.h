/* batch.h - the unit that crosses a channel.
 *
 * A batch is one heap block: this header followed by `len` payload bytes (an
 * encoded array of records, see codec.h). Whoever holds the pointer owns it:
 * the producer until sl_channel_push succeeds, then the channel, then the
 * consumer that popped it, who calls sl_batch_destroy.
 */
#ifndef SL_BATCH_H
#define SL_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  SL_BATCH_DATA = 0,   /* records */
  SL_BATCH_END = 1,    /* the producer is finished (see `closing`) */
  SL_BATCH_BARRIER = 2 /* checkpoint barrier `id` (no payload) */
} sl_batch_kind_t;

typedef struct sl_batch_s {
  struct sl_batch_s *next; /* overflow list link, owned by the channel */
  uint32_t kind;
  uint32_t nrec;    /* records in payload */
  uint32_t closing; /* END: 1 = input ended (run close), 0 = stopping */
  uint64_t id;      /* BARRIER: the checkpoint id */
  uint64_t t_ns;    /* created (uv_hrtime): the records' latency starts */
  size_t len;       /* payload bytes */
  uint8_t data[];
} sl_batch_t;

/* Allocates a batch and copies `len` bytes of payload; NULL on OOM. */
sl_batch_t *sl_batch_create(uint32_t kind, const void *data, size_t len,
                            uint32_t nrec);
/* Takes ownership of nothing; frees b (NULL is fine). */
void sl_batch_destroy(sl_batch_t *b);

#endif
