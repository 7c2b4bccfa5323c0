/* ckpt.h - a checkpoint image: what one completed checkpoint holds, and its
 * on-disk (or in-Redis) byte format.
 *
 * A checkpoint of a pipeline is a list of entries, each naming the node
 * (declaration) it belongs to:
 *   - SOURCE: a source's replay offset (file: byte offset of the next line;
 *     generator: next sequence number);
 *   - SINK:   a sink's committed state (an opaque blob of the sink kind);
 *   - STATE:  the keyed state and timers of one key group of an operator
 *     (an opaque blob written by the Lua runtime with string.buffer).
 * Entries are keyed by node NAME, not by instance, so a pipeline restored
 * with another parallelism finds every key group wherever it now lives.
 *
 * The encoding is little-endian, length-prefixed, with a magic, a version
 * and a CRC-32 over everything before it, so a torn or corrupt image is
 * detected on decode. Images are built and read on the I/O thread.
 */
#ifndef SL_CKPT_H
#define SL_CKPT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  SL_CKPT_SOURCE = 1,
  SL_CKPT_SINK = 2,
  SL_CKPT_STATE = 3,
  SL_CKPT_META = 4 /* a fact about the pipeline: node = its name, offset =
                      a number or blob = text ("pipeline", "max_parallelism") */
} sl_ckpt_kind_t;

typedef struct sl_ckpt_entry_s {
  int kind;       /* sl_ckpt_kind_t */
  char *node;     /* owned */
  int32_t kg;     /* STATE: key group; else -1 */
  int64_t offset; /* SOURCE: replay offset; else 0 */
  uint8_t *blob;  /* SINK, STATE: owned bytes; else NULL */
  size_t len;
} sl_ckpt_entry_t;

typedef struct sl_ckpt_s {
  uint64_t id;
  int final;      /* taken at the end of the input (bounded sources drained) */
  double time_ms; /* when it completed */
  int n, cap;
  sl_ckpt_entry_t *e;
} sl_ckpt_t;

void sl_ckpt_init(sl_ckpt_t *c, uint64_t id);
void sl_ckpt_free(sl_ckpt_t *c); /* frees entries; c can be re-inited */
/* Adders copy node and blob. 0 ok, -1 OOM. */
int sl_ckpt_add_source(sl_ckpt_t *c, const char *node, int64_t offset);
int sl_ckpt_add_meta(sl_ckpt_t *c, const char *what, int64_t number,
                     const char *text);
/* A source whose position is bytes (a Redis Stream entry id). */
int sl_ckpt_add_source_pos(sl_ckpt_t *c, const char *node, int64_t offset,
                           const void *pos, size_t len);
int sl_ckpt_add_sink(sl_ckpt_t *c, const char *node, const void *blob,
                     size_t len);
int sl_ckpt_add_state(sl_ckpt_t *c, const char *node, int32_t kg,
                      const void *blob, size_t len);
/* Lookups (NULL if absent). */
const sl_ckpt_entry_t *sl_ckpt_find(const sl_ckpt_t *c, int kind,
                                    const char *node, int32_t kg);

/* The image: *out is malloc'd (caller frees). 0 ok, -1 OOM. */
int sl_ckpt_encode(const sl_ckpt_t *c, uint8_t **out, size_t *len);
/* Parses and verifies (magic, version, bounds, CRC). On success fills *c
 * (init'ed by the call; free with sl_ckpt_free) and returns 0; on a torn or
 * corrupt image returns -1 and *why (static string). */
int sl_ckpt_decode(const uint8_t *data, size_t len, sl_ckpt_t *c,
                   const char **why);

#endif
