/* store_memory.c - the "memory:NAME" checkpoint store (see store.h), for
 * in-process tests.
 *
 * Owns: a process-wide registry of named stores, each a list of image copies
 * (newest first) and a latest id. A named store is created on first open and
 * lives until the process ends, so a close and reopen within one process
 * sees what was committed (as a restart would with file://). Handles own
 * only their keep count and a pointer to their named store.
 * Threads: any; one mutex guards the whole registry, so handles to the same
 * name may be used from different threads.
 */
#include "store_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct sl_mem_image_s {
  uint64_t id;
  uint8_t *data;
  size_t len;
} sl_mem_image_t;

typedef struct sl_mem_named_s {
  struct sl_mem_named_s *next;
  char *name;
  uint64_t latest;
  sl_mem_image_t *img; /* newest (highest id) first */
  size_t n, cap;
} sl_mem_named_t;

typedef struct {
  sl_store_t base;
  sl_mem_named_t *named;
} sl_store_memory_t;

static pthread_mutex_t sl_mem_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_mem_named_t *sl_mem_registry; /* guarded by sl_mem_lock */

static const sl_store_vt_t sl_store_memory_vt;

static int sl_mem_oom(char **err) {
  return sl_store_errf(err, "checkpoint store: out of memory");
}

/* The named store, created if new; NULL on OOM. Lock held. */
static sl_mem_named_t *sl_mem_named(const char *name) {
  sl_mem_named_t *m;
  for (m = sl_mem_registry; m; m = m->next)
    if (strcmp(m->name, name) == 0)
      return m;
  if (!(m = calloc(1, sizeof(*m))))
    return NULL;
  if (!(m->name = strdup(name))) {
    free(m);
    return NULL;
  }
  m->next = sl_mem_registry;
  sl_mem_registry = m;
  return m;
}

int sl_store_memory_open(const char *where, int keep, sl_store_t **out,
                         char **err) {
  if (!*where)
    return sl_store_errf(err, "checkpoint store memory: needs a name "
                              "(memory:NAME)");
  sl_store_memory_t *h = calloc(1, sizeof(*h));
  if (!h)
    return sl_mem_oom(err);
  pthread_mutex_lock(&sl_mem_lock);
  h->named = sl_mem_named(where);
  pthread_mutex_unlock(&sl_mem_lock);
  if (!h->named) {
    free(h);
    return sl_mem_oom(err);
  }
  h->base.vt = &sl_store_memory_vt;
  h->base.keep = keep;
  *out = &h->base;
  return 0;
}

static void sl_mem_close(sl_store_t *s) {
  free(s);
}

/* Index of id in m->img, or where it goes to keep newest first. */
static size_t sl_mem_find(const sl_mem_named_t *m, uint64_t id, int *found) {
  size_t i = 0;
  while (i < m->n && m->img[i].id > id)
    i++;
  *found = i < m->n && m->img[i].id == id;
  return i;
}

/* Puts (id, data) in place, taking data. 0 ok, -1 OOM. Lock held. */
static int sl_mem_put(sl_mem_named_t *m, uint64_t id, uint8_t *data,
                      size_t len) {
  int found;
  size_t i = sl_mem_find(m, id, &found);
  if (found) {
    free(m->img[i].data);
  } else {
    if (m->n == m->cap) {
      size_t cap = m->cap ? m->cap * 2 : 8;
      sl_mem_image_t *a = realloc(m->img, cap * sizeof(*a));
      if (!a)
        return -1;
      m->img = a;
      m->cap = cap;
    }
    memmove(&m->img[i + 1], &m->img[i], (m->n - i) * sizeof(*m->img));
    m->n++;
  }
  m->img[i] = (sl_mem_image_t){id, data, len};
  return 0;
}

/* Drops images beyond the newest keep, never latest. Lock held. */
static void sl_mem_prune(sl_mem_named_t *m, size_t keep) {
  size_t w = 0;
  for (size_t i = 0; i < m->n; i++) {
    if (i < keep || m->img[i].id == m->latest)
      m->img[w++] = m->img[i];
    else
      free(m->img[i].data);
  }
  m->n = w;
}

static int sl_mem_commit(sl_store_t *s, uint64_t id, const void *data,
                         size_t len, char **err) {
  sl_store_memory_t *h = (sl_store_memory_t *)s;
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy)
    return sl_mem_oom(err);
  if (len)
    memcpy(copy, data, len);
  pthread_mutex_lock(&sl_mem_lock);
  int rc = sl_mem_put(h->named, id, copy, len);
  if (rc == 0) {
    h->named->latest = id;
    sl_mem_prune(h->named, (size_t)s->keep);
  }
  pthread_mutex_unlock(&sl_mem_lock);
  if (rc != 0) {
    free(copy);
    return sl_mem_oom(err);
  }
  return 0;
}

static int sl_mem_latest(sl_store_t *s, uint64_t *id, char **err) {
  sl_store_memory_t *h = (sl_store_memory_t *)s;
  (void)err;
  pthread_mutex_lock(&sl_mem_lock);
  *id = h->named->latest;
  pthread_mutex_unlock(&sl_mem_lock);
  return 0;
}

static int sl_mem_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err) {
  sl_store_memory_t *h = (sl_store_memory_t *)s;
  int rc = 0;
  pthread_mutex_lock(&sl_mem_lock);
  sl_mem_named_t *m = h->named;
  if (m->n && !(*ids = malloc(m->n * sizeof(**ids))))
    rc = -1;
  for (size_t i = 0; rc == 0 && i < m->n; i++)
    (*ids)[i] = m->img[i].id;
  if (rc == 0)
    *n = m->n;
  pthread_mutex_unlock(&sl_mem_lock);
  return rc == 0 ? 0 : sl_mem_oom(err);
}

static int sl_mem_read(sl_store_t *s, uint64_t id, uint8_t **data, size_t *len,
                       char **err) {
  sl_store_memory_t *h = (sl_store_memory_t *)s;
  int found, rc = 0;
  pthread_mutex_lock(&sl_mem_lock);
  sl_mem_named_t *m = h->named;
  size_t i = sl_mem_find(m, id, &found);
  if (!found)
    rc = -2;
  else if (!(*data = malloc(m->img[i].len ? m->img[i].len : 1)))
    rc = -1;
  else {
    memcpy(*data, m->img[i].data, m->img[i].len);
    *len = m->img[i].len;
  }
  pthread_mutex_unlock(&sl_mem_lock);
  if (rc == -2)
    return sl_store_errf(err, "memory:%s: no checkpoint %llu", m->name,
                         (unsigned long long)id);
  return rc == 0 ? 0 : sl_mem_oom(err);
}

static const sl_store_vt_t sl_store_memory_vt = {
    sl_mem_close, sl_mem_commit, sl_mem_latest, sl_mem_list, sl_mem_read,
};
