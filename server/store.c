/* store.c - the checkpoint store front (see store.h): picks the
 * implementation by URL scheme, checks arguments, and calls through the
 * store's vtable (store_impl.h).
 *
 * Owns: nothing beyond the dispatch; each scheme owns its store object.
 * Threads: whichever thread uses the store (one at a time, per store.h).
 * Every call sets *err to NULL on entry, so the caller can free it always.
 */
#include "store_impl.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_store_errf(char **err, const char *fmt, ...) {
  va_list ap;
  char *msg = NULL;
  if (!err)
    return -1;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  free(*err);
  *err = msg;
  return -1;
}

static int sl_store_cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

void sl_store_sort_ids(uint64_t *ids, size_t n) {
  if (n > 1)
    qsort(ids, n, sizeof(*ids), sl_store_cmp_desc);
}

uint64_t sl_store_parse_id(const char *s, size_t len) {
  uint64_t v = 0;
  if (len == 0 || len > 20)
    return 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return 0;
    v = v * 10 + d;
  }
  return v;
}

static void sl_store_clear(char **err) {
  if (err)
    *err = NULL;
}

int sl_store_open(const char *url, int keep, sl_store_t **out, char **err) {
  sl_store_clear(err);
  *out = NULL;
  if (!url)
    return sl_store_errf(err, "checkpoint store: no URL");
  if (keep < 1)
    return sl_store_errf(err, "checkpoint store %s: keep must be >= 1, not %d",
                         url, keep);
  if (strncmp(url, "file://", 7) == 0)
    return sl_store_file_open(url + 7, keep, out, err);
  if (strncmp(url, "memory:", 7) == 0)
    return sl_store_memory_open(url + 7, keep, out, err);
  if (strncmp(url, "redis://", 8) == 0)
    return sl_store_redis_open(url, keep, out, err);
  return sl_store_errf(err,
                       "checkpoint store %s: unknown scheme (expected "
                       "file://DIR, redis://HOST:PORT/DB or memory:NAME)",
                       url);
}

void sl_store_close(sl_store_t *s) {
  if (s)
    s->vt->close(s);
}

int sl_store_commit(sl_store_t *s, uint64_t id, const void *data, size_t len,
                    char **err) {
  sl_store_clear(err);
  if (id == 0)
    return sl_store_errf(err, "checkpoint id 0 is reserved (means none)");
  if (!data && len)
    return sl_store_errf(err, "checkpoint %llu: no data",
                         (unsigned long long)id);
  return s->vt->commit(s, id, data, len, err);
}

int sl_store_latest(sl_store_t *s, uint64_t *id, char **err) {
  sl_store_clear(err);
  *id = 0;
  return s->vt->latest(s, id, err);
}

int sl_store_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err) {
  sl_store_clear(err);
  *ids = NULL;
  *n = 0;
  return s->vt->list(s, ids, n, err);
}

int sl_store_read(sl_store_t *s, uint64_t id, uint8_t **data, size_t *len,
                  char **err) {
  sl_store_clear(err);
  *data = NULL;
  *len = 0;
  return s->vt->read(s, id, data, len, err);
}
