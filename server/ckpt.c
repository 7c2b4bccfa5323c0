/* ckpt.c - checkpoint images (see ckpt.h): the entry list, and its byte
 * encoding with a CRC-32 trailer.
 *
 * Owns: an sl_ckpt_t's entry array, node names and blobs; the CRC-32 table
 * (built once, under pthread_once). Threads: the I/O thread builds, encodes
 * and decodes images; nothing here is shared between threads except the
 * read-only table, so any thread may call any function on its own sl_ckpt_t.
 *
 * Layout (little-endian):
 *   "SLCK" | u32 version (1) | u64 id | u32 flags (bit 0: final)
 *   | f64 time_ms | u32 count
 *   | count x { u8 kind | u32 node_len | node | i32 kg | i64 offset
 *               | u32 blob_len | blob }
 *   | u32 CRC-32 (IEEE, as zlib's crc32) of every byte before it.
 *
 * Decode trusts nothing: every length is checked against the bytes that are
 * left before anything is allocated for it, so a hostile image cannot make
 * it allocate more than about the image's own size.
 */
#include "ckpt.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SL_CKPT_MAGIC "SLCK"
#define SL_CKPT_VERSION 1
#define SL_CKPT_HEAD 32      /* magic .. count */
#define SL_CKPT_TAIL 4       /* the CRC */
#define SL_CKPT_MIN_ENTRY 21 /* kind, node_len, kg, offset, blob_len */

/* ---- CRC-32 ---------------------------------------------------------------
 */

static uint32_t sl_crc_table[256];
static pthread_once_t sl_crc_once = PTHREAD_ONCE_INIT;

static void sl_crc_build(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    sl_crc_table[i] = c;
  }
}

static uint32_t sl_ckpt_crc32(const uint8_t *p, size_t n) {
  pthread_once(&sl_crc_once, sl_crc_build);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++)
    c = sl_crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* ---- entries --------------------------------------------------------------
 */

void sl_ckpt_init(sl_ckpt_t *c, uint64_t id) {
  memset(c, 0, sizeof(*c));
  c->id = id;
}

static void sl_ckpt_entry_free(sl_ckpt_entry_t *e) {
  free(e->node);
  free(e->blob);
}

void sl_ckpt_free(sl_ckpt_t *c) {
  if (!c)
    return;
  for (int i = 0; i < c->n; i++)
    sl_ckpt_entry_free(&c->e[i]);
  free(c->e);
  c->e = NULL;
  c->n = c->cap = 0;
}

static sl_ckpt_entry_t *sl_ckpt_slot(sl_ckpt_t *c) {
  if (c->n == c->cap) {
    if (c->cap > INT_MAX / 2)
      return NULL;
    int cap = c->cap ? c->cap * 2 : 16;
    sl_ckpt_entry_t *e = realloc(c->e, (size_t)cap * sizeof(*e));
    if (!e)
      return NULL;
    c->e = e;
    c->cap = cap;
  }
  return &c->e[c->n];
}

/* Copies len bytes (NULL for an empty blob). 0 ok, -1 OOM. */
static int sl_ckpt_dup(const void *src, size_t len, uint8_t **out) {
  *out = NULL;
  if (len == 0)
    return 0;
  *out = malloc(len);
  if (!*out)
    return -1;
  memcpy(*out, src, len);
  return 0;
}

static int sl_ckpt_add(sl_ckpt_t *c, int kind, const char *node, int32_t kg,
                       int64_t offset, const void *blob, size_t len) {
  sl_ckpt_entry_t *e = sl_ckpt_slot(c);
  if (!e)
    return -1;
  memset(e, 0, sizeof(*e));
  e->node = strdup(node ? node : "");
  if (!e->node || sl_ckpt_dup(blob, len, &e->blob) != 0) {
    sl_ckpt_entry_free(e);
    return -1;
  }
  e->kind = kind;
  e->kg = kg;
  e->offset = offset;
  e->len = len;
  c->n++;
  return 0;
}

int sl_ckpt_add_source(sl_ckpt_t *c, const char *node, int64_t offset) {
  return sl_ckpt_add(c, SL_CKPT_SOURCE, node, -1, offset, NULL, 0);
}

int sl_ckpt_add_meta(sl_ckpt_t *c, const char *what, int64_t number,
                     const char *text) {
  return sl_ckpt_add(c, SL_CKPT_META, what, -1, number, text,
                     text ? strlen(text) : 0);
}

int sl_ckpt_add_source_pos(sl_ckpt_t *c, const char *node, int64_t offset,
                           const void *pos, size_t len) {
  return sl_ckpt_add(c, SL_CKPT_SOURCE, node, -1, offset, pos, len);
}

int sl_ckpt_add_sink(sl_ckpt_t *c, const char *node, const void *blob,
                     size_t len) {
  return sl_ckpt_add(c, SL_CKPT_SINK, node, -1, 0, blob, len);
}

int sl_ckpt_add_state(sl_ckpt_t *c, const char *node, int32_t kg,
                      const void *blob, size_t len) {
  return sl_ckpt_add(c, SL_CKPT_STATE, node, kg, 0, blob, len);
}

/* The integer fields are compared before the name, so a restore that looks
 * up every key group of a few operators (128 x 4 lookups over 512 entries)
 * does a few hundred thousand int compares and only one strcmp per hit. */
const sl_ckpt_entry_t *sl_ckpt_find(const sl_ckpt_t *c, int kind,
                                    const char *node, int32_t kg) {
  if (!c || !node)
    return NULL;
  if (kind != SL_CKPT_STATE)
    kg = -1;
  for (int i = 0; i < c->n; i++) {
    const sl_ckpt_entry_t *e = &c->e[i];
    if (e->kind == kind && e->kg == kg && strcmp(e->node, node) == 0)
      return e;
  }
  return NULL;
}

/* ---- encode ---------------------------------------------------------------
 */

static uint8_t *sl_put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
  return p + 4;
}

static uint8_t *sl_put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
  return p + 8;
}

static uint8_t *sl_put_bytes(uint8_t *p, const void *src, size_t n) {
  if (n)
    memcpy(p, src, n);
  return p + n;
}

/* The encoded size, or 0 when a length does not fit its u32 field or the
 * total overflows size_t. */
static size_t sl_ckpt_size(const sl_ckpt_t *c) {
  size_t total = SL_CKPT_HEAD + SL_CKPT_TAIL;
  if (c->n < 0 || (uint64_t)c->n > UINT32_MAX)
    return 0;
  for (int i = 0; i < c->n; i++) {
    size_t nl = strlen(c->e[i].node), bl = c->e[i].len;
    if ((uint64_t)nl > UINT32_MAX || (uint64_t)bl > UINT32_MAX)
      return 0;
    if (SIZE_MAX - total < SL_CKPT_MIN_ENTRY ||
        SIZE_MAX - total - SL_CKPT_MIN_ENTRY < nl ||
        SIZE_MAX - total - SL_CKPT_MIN_ENTRY - nl < bl)
      return 0;
    size_t add = SL_CKPT_MIN_ENTRY + nl + bl;
    total += add;
  }
  return total;
}

static uint8_t *sl_ckpt_put_entry(uint8_t *p, const sl_ckpt_entry_t *e) {
  size_t nl = strlen(e->node);
  *p++ = (uint8_t)e->kind;
  p = sl_put_u32(p, (uint32_t)nl);
  p = sl_put_bytes(p, e->node, nl);
  p = sl_put_u32(p, (uint32_t)e->kg);
  p = sl_put_u64(p, (uint64_t)e->offset);
  p = sl_put_u32(p, (uint32_t)e->len);
  return sl_put_bytes(p, e->blob, e->len);
}

int sl_ckpt_encode(const sl_ckpt_t *c, uint8_t **out, size_t *len) {
  size_t total = sl_ckpt_size(c);
  uint8_t *buf = total ? malloc(total) : NULL;
  *out = NULL;
  *len = 0;
  if (!buf)
    return -1;
  uint64_t t;
  memcpy(&t, &c->time_ms, sizeof(t));
  uint8_t *p = sl_put_bytes(buf, SL_CKPT_MAGIC, 4);
  p = sl_put_u32(p, SL_CKPT_VERSION);
  p = sl_put_u64(p, c->id);
  p = sl_put_u32(p, c->final ? 1u : 0u);
  p = sl_put_u64(p, t);
  p = sl_put_u32(p, (uint32_t)c->n);
  for (int i = 0; i < c->n; i++)
    p = sl_ckpt_put_entry(p, &c->e[i]);
  sl_put_u32(p, sl_ckpt_crc32(buf, (size_t)(p - buf)));
  *out = buf;
  *len = total;
  return 0;
}

/* ---- decode ---------------------------------------------------------------
 */

typedef struct {
  const uint8_t *p, *end;
} sl_rd_t;

static uint32_t sl_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t sl_get_u64(const uint8_t *p) {
  return (uint64_t)sl_get_u32(p) | (uint64_t)sl_get_u32(p + 4) << 32;
}

static size_t sl_rd_left(const sl_rd_t *r) {
  return (size_t)(r->end - r->p);
}

/* Each reader returns -1 (nothing consumed) when fewer than its bytes are
 * left. */
static int sl_rd_u32(sl_rd_t *r, uint32_t *v) {
  if (sl_rd_left(r) < 4)
    return -1;
  *v = sl_get_u32(r->p);
  r->p += 4;
  return 0;
}

static int sl_rd_u64(sl_rd_t *r, uint64_t *v) {
  if (sl_rd_left(r) < 8)
    return -1;
  *v = sl_get_u64(r->p);
  r->p += 8;
  return 0;
}

/* A u32 length, then that many bytes, copied; nul-terminated when asked. */
static int sl_rd_chunk(sl_rd_t *r, int nul, uint8_t **out, size_t *len) {
  uint32_t n;
  *out = NULL;
  *len = 0;
  if (sl_rd_u32(r, &n) != 0 || n > sl_rd_left(r))
    return -1;
  if (n || nul) {
    if (!(*out = malloc((size_t)n + (nul ? 1 : 0))))
      return -2;
    memcpy(*out, r->p, n);
    if (nul)
      (*out)[n] = 0;
  }
  r->p += n;
  *len = n;
  return 0;
}

static int sl_rd_entry(sl_rd_t *r, sl_ckpt_entry_t *e, const char **why) {
  uint8_t *node;
  size_t nl;
  uint32_t kg;
  uint64_t off;
  int rc;
  if (sl_rd_left(r) < 1)
    return (*why = "truncated"), -1;
  e->kind = *r->p++;
  if (e->kind < SL_CKPT_SOURCE || e->kind > SL_CKPT_META)
    return (*why = "bad entry kind"), -1;
  if ((rc = sl_rd_chunk(r, 1, &node, &nl)) != 0)
    return (*why = rc == -2 ? "out of memory" : "truncated"), -1;
  e->node = (char *)node;
  if (memchr(node, 0, nl))
    return (*why = "bad node name"), -1;
  if (sl_rd_u32(r, &kg) != 0 || sl_rd_u64(r, &off) != 0)
    return (*why = "truncated"), -1;
  e->kg = (int32_t)kg;
  e->offset = (int64_t)off;
  if ((rc = sl_rd_chunk(r, 0, &e->blob, &e->len)) != 0)
    return (*why = rc == -2 ? "out of memory" : "truncated"), -1;
  return 0;
}

/* Magic, version, the fixed header's length and the CRC. */
static int sl_ckpt_check(const uint8_t *data, size_t len, const char **why) {
  if (len < 4)
    return (*why = "truncated"), -1;
  if (memcmp(data, SL_CKPT_MAGIC, 4) != 0)
    return (*why = "bad magic"), -1;
  if (len < 8)
    return (*why = "truncated"), -1;
  if (sl_get_u32(data + 4) != SL_CKPT_VERSION)
    return (*why = "unsupported version"), -1;
  if (len < SL_CKPT_HEAD + SL_CKPT_TAIL)
    return (*why = "truncated"), -1;
  if (sl_ckpt_crc32(data, len - 4) != sl_get_u32(data + len - 4))
    return (*why = "bad checksum"), -1;
  return 0;
}

static int sl_ckpt_entries(sl_rd_t *r, uint32_t count, sl_ckpt_t *c,
                           const char **why) {
  if (count > sl_rd_left(r) / SL_CKPT_MIN_ENTRY || count > INT32_MAX)
    return (*why = "truncated"), -1;
  if (count && !(c->e = calloc(count, sizeof(*c->e))))
    return (*why = "out of memory"), -1;
  c->cap = (int)count;
  for (uint32_t i = 0; i < count; i++) {
    c->n++; /* counted first, so sl_ckpt_free frees a partial entry */
    if (sl_rd_entry(r, &c->e[i], why) != 0)
      return -1;
  }
  if (sl_rd_left(r) != 0)
    return (*why = "trailing bytes"), -1;
  return 0;
}

int sl_ckpt_decode(const uint8_t *data, size_t len, sl_ckpt_t *c,
                   const char **why) {
  const char *dummy;
  uint64_t id = 0, t = 0;
  uint32_t flags = 0, count = 0;
  if (!why)
    why = &dummy;
  sl_ckpt_init(c, 0);
  if (!data)
    len = 0;
  if (sl_ckpt_check(data, len, why) != 0)
    return -1;
  sl_rd_t r = {data + 8, data + len - SL_CKPT_TAIL};
  sl_rd_u64(&r, &id);
  sl_rd_u32(&r, &flags);
  sl_rd_u64(&r, &t);
  sl_rd_u32(&r, &count);
  c->id = id;
  c->final = (flags & 1u) != 0;
  memcpy(&c->time_ms, &t, sizeof(t));
  if (sl_ckpt_entries(&r, count, c, why) != 0) {
    sl_ckpt_free(c);
    sl_ckpt_init(c, 0);
    return -1;
  }
  return 0;
}
