/* store_impl.h - private to the checkpoint stores (store.c, store_file.c,
 * store_memory.c, store_redis.c): the per-scheme vtable every store object
 * starts with, and the shared error formatter. Not for the rest of the core:
 * use store.h.
 */
#ifndef SL_STORE_IMPL_H
#define SL_STORE_IMPL_H

#include "store.h"

typedef struct sl_store_vt_s {
  void (*close)(sl_store_t *s);
  int (*commit)(sl_store_t *s, uint64_t id, const void *data, size_t len,
                char **err);
  int (*latest)(sl_store_t *s, uint64_t *id, char **err);
  int (*list)(sl_store_t *s, uint64_t **ids, size_t *n, char **err);
  int (*read)(sl_store_t *s, uint64_t id, uint8_t **data, size_t *len,
              char **err);
} sl_store_vt_t;

/* The head of every store object; each scheme's struct embeds it first. */
struct sl_store_s {
  const sl_store_vt_t *vt;
  int keep;
};

/* Scheme constructors; `where` is the URL after "file://" / "memory:". */
int sl_store_file_open(const char *where, int keep, sl_store_t **out,
                       char **err);
int sl_store_memory_open(const char *where, int keep, sl_store_t **out,
                         char **err);
/* Takes the whole "redis://..." URL (redis_url.h parses it). */
int sl_store_redis_open(const char *url, int keep, sl_store_t **out,
                        char **err);

/* Sets *err (when err is not NULL) to a malloc'd formatted message; leaves
 * it NULL if that allocation fails. Returns -1 for `return sl_store_errf()`.
 */
int sl_store_errf(char **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sorts ids newest (highest) first. */
void sl_store_sort_ids(uint64_t *ids, size_t n);
/* s[0..len) as a checkpoint id: 1 to 20 decimal digits that fit a u64;
 * 0 for anything else. */
uint64_t sl_store_parse_id(const char *s, size_t len);

#endif
