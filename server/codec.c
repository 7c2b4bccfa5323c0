/* codec.c - the record codec: LuaJIT string.buffer serialization (codec.h).
 *
 * Owns: sl_buf_t byte buffers, the batch writer and reader, and the value to
 * output-line conversion. Threads: any; a writer, reader or buffer is used by
 * one thread at a time (sources and sinks on the I/O thread). No globals.
 *
 * Wire format (LuaJIT lj_serialize.c; every claim checked against luajit):
 *   nil 0x00, false 0x01, true 0x02, int 0x06 int32 LE, num 0x07 double LE,
 *   table 0x08 empty | 0x09 h.U h*{k v} | 0x0a a.U a*obj (0-based array)
 *         | 0x0b a.U h.U a*obj h*{k v} | 0x0c a.U (a-1)*obj (1-based array)
 *         | 0x0d a.U h.U (a-1)*obj h*{k v},
 *   string (0x20+len).U bytes,
 *   .U: 0x00..0xdf one byte; 0xe0..0x1fdf two bytes
 *       (0xe0|((n-0xe0)>>8)), (n-0xe0)&0xff; larger 0xff then u32 LE.
 * The tag itself is a .U (a string of length >= 0xc0 has a 2- or 5-byte tag).
 * Other tags (light userdata, dictionary refs, int64/complex cdata) are
 * errors here.
 *
 * A batch is a 1-based array of 3*n slots {v1,k1,t1,...}. The writer emits
 * the array length in the 5-byte form (0x0c 0xff u32) so it can be patched in
 * finish without moving the payload; LuaJIT's decoder accepts any .U form.
 * An empty batch is written as LuaJIT writes {}: the single byte 0x08.
 *
 * Everything that reads bytes is bounds-checked against `end`, and tables
 * nest at most SL_CODEC_MAX_DEPTH deep (LuaJIT's own encoder limit), so
 * hostile input is rejected, never over-read. Each object consumes at least
 * one byte, so the reader's work is linear in the input and
 * sl_codec_line's is linear times the nesting depth.
 *
 * One rule beyond LuaJIT's: a table used as a key is written as the JSON
 * text of that table, so a table key inside a table key would be escaped
 * once per level (exponential output); both the reader and sl_codec_line
 * reject it. Hash pairs whose value is nil (which LuaJIT never writes) are
 * skipped.
 */
#include "codec.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_CODEC_MAX_DEPTH 100
/* 3*n+1 must fit the u32 array length */
#define SL_CODEC_MAX_REC ((UINT32_MAX - 1) / 3)

enum {
  SL_TAG_NIL = 0x00,
  SL_TAG_FALSE = 0x01,
  SL_TAG_TRUE = 0x02,
  SL_TAG_INT = 0x06,
  SL_TAG_NUM = 0x07,
  SL_TAG_TAB = 0x08,    /* +1 hash part, +2 array part, +4 1-based array */
  SL_TAG_TAB_A1 = 0x0c, /* 1-based array, no hash part: a batch */
  SL_TAG_TAB_MAX = 0x0d,
  SL_TAG_STR = 0x20
};

/* ---- byte buffer --------------------------------------------------------- */

void sl_buf_init(sl_buf_t *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}

void sl_buf_free(sl_buf_t *b) {
  free(b->data);
  sl_buf_init(b);
}

static int sl_buf_grow(sl_buf_t *b, size_t extra) {
  if (extra > SIZE_MAX - b->len)
    return -1;
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *d = realloc(b->data, cap);
  if (!d)
    return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

int sl_buf_reserve(sl_buf_t *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  return sl_buf_grow(b, extra);
}

int sl_buf_append(sl_buf_t *b, const void *p, size_t n) {
  if (n == 0)
    return 0;
  if (sl_buf_reserve(b, n) < 0)
    return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

uint8_t *sl_buf_take(sl_buf_t *b, size_t *len) {
  uint8_t *d = b->data;
  if (len)
    *len = b->len;
  sl_buf_init(b);
  return d;
}

static inline int sl_buf_putc(sl_buf_t *b, uint8_t c) {
  if (b->len == b->cap && sl_buf_grow(b, 1) < 0)
    return -1;
  b->data[b->len++] = c;
  return 0;
}

static inline int sl_buf_puts(sl_buf_t *b, const char *s) {
  return sl_buf_append(b, s, strlen(s));
}

/* ---- primitive encoding -------------------------------------------------- */

static inline uint32_t sl_codec_ld32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static inline void sl_codec_st32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static inline double sl_codec_ldnum(const uint8_t *p) {
  uint64_t u = (uint64_t)sl_codec_ld32(p) | (uint64_t)sl_codec_ld32(p + 4)
                                                << 32;
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

static inline uint8_t *sl_codec_stnum(uint8_t *p, double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  sl_codec_st32(p, (uint32_t)u);
  sl_codec_st32(p + 4, (uint32_t)(u >> 32));
  return p + 8;
}

/* Writes v as a .U (at most 5 bytes). */
static inline uint8_t *sl_codec_stu(uint8_t *p, uint32_t v) {
  if (v < 0xe0) {
    *p++ = (uint8_t)v;
  } else if (v < 0x1fe0) {
    v -= 0xe0;
    *p++ = (uint8_t)(0xe0 | (v >> 8));
    *p++ = (uint8_t)v;
  } else {
    *p++ = 0xff;
    sl_codec_st32(p, v);
    p += 4;
  }
  return p;
}

/* Reads a .U at *pp (< end). Returns the advanced pointer, NULL if cut. */
static inline const uint8_t *sl_codec_ldu(const uint8_t *p, const uint8_t *end,
                                          uint32_t *v) {
  if (p >= end)
    return NULL;
  uint32_t x = *p++;
  if (x >= 0xe0) {
    if (x != 0xff) {
      if (p >= end)
        return NULL;
      x = ((x & 0x1f) << 8) + *p++ + 0xe0;
    } else {
      if (end - p < 4)
        return NULL;
      x = sl_codec_ld32(p);
      p += 4;
    }
  }
  *v = x;
  return p;
}

/* ---- validating skip ----------------------------------------------------- */

/* Where an object sits, for the one rule beyond LuaJIT's: no table may be a
 * key inside a table that is itself a key (see sl_codec_line). */
enum { SL_SKIP_IN_KEY = 1, SL_SKIP_IS_KEY = 2 };

static const uint8_t *sl_codec_skip(const uint8_t *p, const uint8_t *end,
                                    int depth, int where, const char **err);

/* The part of a table after its tag: counts, then entries. */
typedef struct sl_codec_tab_s {
  uint32_t narr;  /* array objects that follow */
  uint32_t nhash; /* key/value pairs after them */
  uint32_t base;  /* Lua index of the first array object (0 or 1) */
} sl_codec_tab_t;

static const uint8_t *sl_codec_tab_head(const uint8_t *p, const uint8_t *end,
                                        uint32_t tag, sl_codec_tab_t *t) {
  uint32_t a = 0, h = 0;
  if (tag >= SL_TAG_TAB + 2 && !(p = sl_codec_ldu(p, end, &a)))
    return NULL;
  if ((tag & 1) && !(p = sl_codec_ldu(p, end, &h)))
    return NULL;
  t->base = tag >= SL_TAG_TAB + 4;
  /* a 1-based array of length a holds slots 1..a-1 */
  t->narr = t->base ? (a ? a - 1 : 0) : a;
  t->nhash = h;
  return p;
}

/* 1 if the object at p is nil, in any .U form of its tag. */
static inline int sl_codec_is_nil(const uint8_t *p, const uint8_t *end) {
  uint32_t tag;
  return sl_codec_ldu(p, end, &tag) && tag == SL_TAG_NIL;
}

static const uint8_t *sl_codec_skip_tab(const uint8_t *p, const uint8_t *end,
                                        uint32_t tag, int depth, int in_key,
                                        const char **err) {
  sl_codec_tab_t t;
  if (depth >= SL_CODEC_MAX_DEPTH) {
    *err = "tables nested too deep";
    return NULL;
  }
  if (!(p = sl_codec_tab_head(p, end, tag, &t))) {
    *err = "truncated table header";
    return NULL;
  }
  for (uint32_t i = 0; i < t.narr && p; i++)
    p = sl_codec_skip(p, end, depth + 1, in_key, err);
  for (uint32_t i = 0; i < t.nhash && p; i++) {
    if (sl_codec_is_nil(p, end)) {
      *err = "table key is nil";
      return NULL;
    }
    p = sl_codec_skip(p, end, depth + 1, in_key | SL_SKIP_IS_KEY, err);
    if (p)
      p = sl_codec_skip(p, end, depth + 1, in_key, err);
  }
  return p;
}

/* Validates one object at p; returns the byte after it, or NULL (*err). */
static const uint8_t *sl_codec_skip(const uint8_t *p, const uint8_t *end,
                                    int depth, int where, const char **err) {
  uint32_t tag;
  if (!(p = sl_codec_ldu(p, end, &tag))) {
    *err = "truncated object";
    return NULL;
  }
  if (tag >= SL_TAG_STR) {
    if (tag - SL_TAG_STR > (size_t)(end - p)) {
      *err = "truncated string";
      return NULL;
    }
    return p + (tag - SL_TAG_STR);
  }
  size_t need = tag == SL_TAG_INT ? 4 : tag == SL_TAG_NUM ? 8 : 0;
  if (tag <= SL_TAG_TRUE || need) {
    if ((size_t)(end - p) < need) {
      *err = "truncated number";
      return NULL;
    }
    return p + need;
  }
  if (tag < SL_TAG_TAB || tag > SL_TAG_TAB_MAX) {
    *err = "unsupported type tag";
    return NULL;
  }
  if (where == (SL_SKIP_IN_KEY | SL_SKIP_IS_KEY)) {
    *err = "table key inside a table key";
    return NULL;
  }
  /* everything inside a key table is "in a key" */
  return sl_codec_skip_tab(p, end, tag, depth, where ? SL_SKIP_IN_KEY : 0, err);
}

/* The common cases inline (short string, nil, number), else the full skip. */
static inline const uint8_t *
sl_codec_skip_fast(const uint8_t *p, const uint8_t *end, const char **err) {
  if (p < end) {
    uint32_t tag = *p;
    if (tag >= SL_TAG_STR && tag < 0xe0) {
      if (tag - SL_TAG_STR < (size_t)(end - p))
        return p + 1 + (tag - SL_TAG_STR);
    } else if (tag == SL_TAG_NIL) {
      return p + 1;
    } else if (tag == SL_TAG_NUM && end - p >= 9) {
      return p + 9;
    }
  }
  return sl_codec_skip(p, end, 0, 0, err);
}

/* ---- writer ---------------------------------------------------------------*/

#define SL_CODEC_NOT_BEGUN SIZE_MAX

void sl_codec_writer_init(sl_codec_writer_t *w) {
  sl_buf_init(&w->buf);
  w->nrec = 0;
  w->count_at = SL_CODEC_NOT_BEGUN;
}

void sl_codec_writer_free(sl_codec_writer_t *w) {
  sl_buf_free(&w->buf);
  w->nrec = 0;
  w->count_at = SL_CODEC_NOT_BEGUN;
}

int sl_codec_writer_begin(sl_codec_writer_t *w) {
  w->buf.len = 0;
  w->nrec = 0;
  w->count_at = SL_CODEC_NOT_BEGUN;
  if (sl_buf_reserve(&w->buf, 6) < 0)
    return -1;
  w->buf.data[0] = SL_TAG_TAB_A1;
  w->buf.data[1] = 0xff;
  sl_codec_st32(w->buf.data + 2, 1); /* patched by finish */
  w->buf.len = 6;
  w->count_at = 1;
  return 0;
}

int sl_codec_writer_add_string(sl_codec_writer_t *w, const char *s, size_t n,
                               double time_ms) {
  if (w->count_at == SL_CODEC_NOT_BEGUN || w->nrec >= SL_CODEC_MAX_REC ||
      n > UINT32_MAX - SL_TAG_STR)
    return -1;
  /* tag (<= 5) + bytes + nil key (1) + number (9) */
  if (w->buf.cap - w->buf.len < n + 15 && sl_buf_grow(&w->buf, n + 15) < 0)
    return -1;
  uint8_t *q = sl_codec_stu(w->buf.data + w->buf.len, SL_TAG_STR + (uint32_t)n);
  if (n)
    memcpy(q, s, n);
  q += n;
  *q++ = SL_TAG_NIL;
  *q++ = SL_TAG_NUM;
  q = sl_codec_stnum(q, time_ms);
  w->buf.len = (size_t)(q - w->buf.data);
  w->nrec++;
  return 0;
}

/* One key of add_fields, to find keys given twice. */
typedef struct sl_codec_fkey_s {
  const char *k;
  size_t len, pair;
} sl_codec_fkey_t;

static int sl_codec_fkey_cmp(const void *a, const void *b) {
  const sl_codec_fkey_t *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->k, y->k, n) : 0;
  if (c)
    return c;
  if (x->len != y->len)
    return x->len < y->len ? -1 : 1;
  return x->pair < y->pair ? -1 : x->pair > y->pair;
}

/* Marks in drop[] every pair whose key a later pair gives again; returns the
 * pairs kept, or SIZE_MAX on OOM. Sorting keeps it O(n log n) for entries
 * with many fields. */
static size_t sl_codec_dedup(const char *const *kv, const size_t *lens,
                             size_t npairs, uint8_t *drop) {
  sl_codec_fkey_t stack[16], *keys = stack;
  if (npairs > 16 && !(keys = malloc(npairs * sizeof *keys)))
    return SIZE_MAX;
  for (size_t i = 0; i < npairs; i++) {
    keys[i].k = kv[2 * i];
    keys[i].len = lens[2 * i];
    keys[i].pair = i;
  }
  qsort(keys, npairs, sizeof *keys, sl_codec_fkey_cmp);
  size_t kept = npairs;
  for (size_t i = 0; i + 1 < npairs; i++) /* equal keys: pairs ascending */
    if (keys[i].len == keys[i + 1].len &&
        (!keys[i].len || !memcmp(keys[i].k, keys[i + 1].k, keys[i].len))) {
      drop[keys[i].pair] = 1;
      kept--;
    }
  if (keys != stack)
    free(keys);
  return kept;
}

int sl_codec_writer_add_fields(sl_codec_writer_t *w, const char *const *kv,
                               const size_t *lens, size_t npairs,
                               double time_ms) {
  if (w->count_at == SL_CODEC_NOT_BEGUN || w->nrec >= SL_CODEC_MAX_REC ||
      (npairs && (!kv || !lens)) || npairs > UINT32_MAX ||
      npairs > SIZE_MAX / 2)
    return -1;
  /* table tag (1) + count (<= 5) + per string tag (<= 5) and bytes + nil key
   * (1) + number (9) */
  size_t need = 16;
  for (size_t i = 0; i < 2 * npairs; i++) {
    if (lens[i] > UINT32_MAX - SL_TAG_STR || (lens[i] && !kv[i]) ||
        lens[i] > SIZE_MAX - 5 - need)
      return -1;
    need += 5 + lens[i];
  }
  uint8_t small[16], *drop = small;
  if (npairs > sizeof small && !(drop = calloc(npairs, 1)))
    return -1;
  if (drop == small)
    memset(small, 0, sizeof small);
  size_t kept = npairs > 1 ? sl_codec_dedup(kv, lens, npairs, drop) : npairs;
  int rc = -1;
  if (kept == SIZE_MAX ||
      (w->buf.cap - w->buf.len < need && sl_buf_grow(&w->buf, need) < 0))
    goto out;
  uint8_t *q = w->buf.data + w->buf.len;
  if (kept == 0) {
    *q++ = SL_TAG_TAB; /* {} as LuaJIT writes it */
  } else {
    *q++ = SL_TAG_TAB + 1; /* hash part only */
    q = sl_codec_stu(q, (uint32_t)kept);
    for (size_t i = 0; i < 2 * npairs; i++) {
      if (drop[i / 2])
        continue;
      q = sl_codec_stu(q, SL_TAG_STR + (uint32_t)lens[i]);
      if (lens[i])
        memcpy(q, kv[i], lens[i]);
      q += lens[i];
    }
  }
  *q++ = SL_TAG_NIL;
  *q++ = SL_TAG_NUM;
  q = sl_codec_stnum(q, time_ms);
  w->buf.len = (size_t)(q - w->buf.data);
  w->nrec++;
  rc = 0;
out:
  if (drop != small)
    free(drop);
  return rc;
}

int sl_codec_writer_finish(sl_codec_writer_t *w) {
  if (w->count_at == SL_CODEC_NOT_BEGUN)
    return -1;
  if (w->nrec == 0) {
    w->buf.data[0] = SL_TAG_TAB; /* what LuaJIT writes for {} */
    w->buf.len = 1;
  } else {
    sl_codec_st32(w->buf.data + w->count_at + 1, 3 * w->nrec + 1);
  }
  w->count_at = SL_CODEC_NOT_BEGUN; /* begin again before adding more */
  return 0;
}

/* ---- reader -------------------------------------------------------------- */

static int sl_codec_reader_fail(sl_codec_reader_t *r, const char *why) {
  r->error = why;
  return -1;
}

int sl_codec_reader_init(sl_codec_reader_t *r, const uint8_t *data,
                         size_t len) {
  r->p = r->end = data;
  r->nrec = r->next = 0;
  r->error = NULL;
  if (!data || len == 0)
    return sl_codec_reader_fail(r, "empty batch");
  r->end = data + len;
  uint32_t tag, a;
  const uint8_t *p = sl_codec_ldu(data, r->end, &tag);
  if (!p)
    return sl_codec_reader_fail(r, "truncated batch header");
  if (tag == SL_TAG_TAB) { /* {}: no records */
    r->p = p;
    return 0;
  }
  if (tag != SL_TAG_TAB_A1)
    return sl_codec_reader_fail(r, "batch is not a 1-based array");
  if (!(p = sl_codec_ldu(p, r->end, &a)))
    return sl_codec_reader_fail(r, "truncated batch header");
  uint32_t slots = a ? a - 1 : 0;
  if (slots % 3)
    return sl_codec_reader_fail(r, "batch slots not a multiple of 3");
  /* a record is at least 7 bytes: value, key, 0x06 int32 time */
  if ((uint64_t)(slots / 3) * 7 > (uint64_t)(r->end - p))
    return sl_codec_reader_fail(r, "truncated batch");
  r->p = p;
  r->nrec = slots / 3;
  return 0;
}

static int sl_codec_reader_done(sl_codec_reader_t *r) {
  if (r->p != r->end)
    return sl_codec_reader_fail(r, "trailing bytes after batch");
  return 0;
}

int sl_codec_reader_next(sl_codec_reader_t *r, sl_codec_record_t *rec) {
  if (r->error)
    return -1;
  if (r->next >= r->nrec)
    return sl_codec_reader_done(r);
  const char *err = "malformed record";
  const uint8_t *p = r->p, *end = r->end;
  const uint8_t *v = p;
  if (!(p = sl_codec_skip_fast(p, end, &err)))
    return sl_codec_reader_fail(r, err);
  const uint8_t *k = p;
  if (!(p = sl_codec_skip_fast(p, end, &err)))
    return sl_codec_reader_fail(r, err);
  const uint8_t *kend = p;
  if (end - p >= 9 && *p == SL_TAG_NUM) {
    rec->time_ms = sl_codec_ldnum(p + 1);
    p += 9;
  } else if (end - p >= 5 && *p == SL_TAG_INT) {
    rec->time_ms = (double)(int32_t)sl_codec_ld32(p + 1);
    p += 5;
  } else {
    return sl_codec_reader_fail(r, "record time is not a number");
  }
  rec->value = v;
  rec->value_end = k;
  rec->key = k;
  rec->key_end = kend;
  r->p = p;
  r->next++;
  return 1;
}

/* ---- output lines -------------------------------------------------------- */

/* Numbers are printed like LuaJIT's tostring: "%.14g", except that LuaJIT
 * rounds an exact decimal tie away from zero (123456789012345 ->
 * "1.2345678901235e+14") where glibc rounds it to even ("...234e+14").
 * So: glibc gives the correctly rounded 15 significant digits; digit 15
 * decides the rounding to 14 unless it is a 5, when an exact check tells a
 * tie (round away) from a value just above or below it (ask glibc again). */

/* 1 if the positive double d is exactly m * 10^e10 (0 < m < 2^63). */
static int sl_codec_num_exact(double d, uint64_t m, int e10) {
  int q;
  double f = frexp(d, &q);
  uint64_t mant = (uint64_t)ldexp(f, 53); /* d = mant * 2^(q-53) */
  q -= 53;
  if (mant == 0 || m == 0)
    return 0;
  while (!(mant & 1))
    mant >>= 1, q++;
  int a = e10; /* m * 10^e10 = m * 2^e10 * 5^e10; make m odd */
  while (!(m & 1))
    m >>= 1, a++;
  if (a != q) /* both odd parts times a power of two: the powers must match */
    return 0;
  int k = e10 < 0 ? -e10 : e10;
  uint64_t p5 = 1;
  for (int i = 0; i < k; i++) {
    if (p5 > UINT64_MAX / 5)
      return 0;
    p5 *= 5;
  }
  if (e10 >= 0) /* mant == m * 5^k */
    return m <= UINT64_MAX / p5 && mant == m * p5;
  return m % p5 == 0 && m / p5 == mant; /* m == mant * 5^k */
}

/* Writes digits (14, no dot) and exponent as %g does; returns the length. */
static size_t sl_codec_num_g(char *dst, int neg, char *dig, int x) {
  int n = 14;
  while (n > 1 && dig[n - 1] == '0')
    n--;
  char *p = dst;
  if (neg)
    *p++ = '-';
  if (x < -4 || x >= 14) {
    *p++ = dig[0];
    if (n > 1) {
      *p++ = '.';
      memcpy(p, dig + 1, (size_t)n - 1);
      p += n - 1;
    }
    p += sprintf(p, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
  } else if (x >= 0) {
    for (int i = 0; i <= x; i++)
      *p++ = i < n ? dig[i] : '0';
    if (n > x + 1) {
      *p++ = '.';
      memcpy(p, dig + x + 1, (size_t)(n - x - 1));
      p += n - x - 1;
    }
  } else {
    *p++ = '0';
    *p++ = '.';
    for (int i = 0; i < -x - 1; i++)
      *p++ = '0';
    memcpy(p, dig, (size_t)n);
    p += n;
  }
  *p = 0;
  return (size_t)(p - dst);
}

/* Parses glibc's "%.Ne" output "D.DDDDe+XX" into digits and exponent. */
static int sl_codec_num_digits(const char *s, char *dig, int ndig) {
  dig[0] = s[0];
  memcpy(dig + 1, s + 2, (size_t)ndig - 1);
  return atoi(s + ndig + 2);
}

/* Formats a finite non-integer-fast-path number; dst >= 32 bytes. */
static size_t sl_codec_num_slow(char *dst, double d) {
  int neg = signbit(d) != 0;
  double a = fabs(d);
  char e15[40], dig[16];
  snprintf(e15, sizeof(e15), "%.14e", a);
  int x = sl_codec_num_digits(e15, dig, 15);
  int up = dig[14] > '5';
  if (dig[14] == '5') {
    uint64_t m = 0;
    for (int i = 0; i < 15; i++)
      m = m * 10 + (uint64_t)(dig[i] - '0');
    if (sl_codec_num_exact(a, m, x - 14)) {
      up = 1; /* a tie: away from zero */
    } else {
      snprintf(e15, sizeof(e15), "%.13e", a); /* glibc rounds it right */
      x = sl_codec_num_digits(e15, dig, 14);
    }
  }
  if (up) {
    int i = 13;
    while (i >= 0 && dig[i] == '9')
      dig[i--] = '0';
    if (i >= 0) {
      dig[i]++;
    } else { /* 99..9 -> 100..0 */
      dig[0] = '1';
      x++;
    }
  }
  return sl_codec_num_g(dst, neg, dig, x);
}

/* Formats d like LuaJIT's tostring; dst >= 32 bytes. */
static size_t sl_codec_fmtnum(char *dst, double d) {
  if (isnan(d))
    return (size_t)sprintf(dst, "nan");
  if (isinf(d))
    return (size_t)sprintf(dst, d < 0 ? "-inf" : "inf");
  /* integers of up to 14 digits print exactly; -0 takes the slow path */
  if (d > -1e14 && d < 1e14 && d == (double)(int64_t)d &&
      (d != 0 || !signbit(d)))
    return (size_t)sprintf(dst, "%" PRId64, (int64_t)d);
  return sl_codec_num_slow(dst, d);
}

static int sl_codec_put_num(sl_buf_t *out, double d, int json) {
  char tmp[32];
  if (json && !isfinite(d))
    return sl_buf_puts(out, "null");
  return sl_buf_append(out, tmp, sl_codec_fmtnum(tmp, d));
}

/* Appends s as a JSON string: quotes, escapes, other bytes as they are. */
static int sl_codec_put_jstr(sl_buf_t *out, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (sl_buf_putc(out, '"') < 0)
    return -1;
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    if (sl_buf_append(out, s + run, i - run) < 0)
      return -1;
    run = i + 1;
    char e[7] = {'\\', 0, 0, 0, 0, 0, 0};
    size_t elen = 2;
    switch (c) {
    case '"':
      e[1] = '"';
      break;
    case '\\':
      e[1] = '\\';
      break;
    case '\n':
      e[1] = 'n';
      break;
    case '\r':
      e[1] = 'r';
      break;
    case '\t':
      e[1] = 't';
      break;
    case '\b':
      e[1] = 'b';
      break;
    case '\f':
      e[1] = 'f';
      break;
    default:
      memcpy(e + 1, "u00", 3);
      e[4] = hex[c >> 4];
      e[5] = hex[c & 15];
      elen = 6;
    }
    if (sl_buf_append(out, e, elen) < 0)
      return -1;
  }
  if (sl_buf_append(out, s + run, n - run) < 0)
    return -1;
  return sl_buf_putc(out, '"');
}

/* How an object is written: the top-level value, a value inside a table's
 * JSON, or inside the JSON text of a table used as a key (where a nested
 * table key is refused: its text would be escaped once per level, which
 * grows exponentially with the nesting). */
enum { SL_LINE_TOP = 0, SL_LINE_JSON = 1, SL_LINE_KEY = 3 };

static const uint8_t *sl_codec_put_obj(sl_buf_t *out, const uint8_t *p,
                                       const uint8_t *end, int depth, int mode);

/* One table key or value of a JSON object, in the order it will be written. */
typedef struct sl_codec_entry_s {
  const uint8_t *k; /* key text (string bytes), or NULL: use owned or num */
  size_t klen;
  uint8_t *owned;   /* key text rendered on the heap (table keys) */
  const uint8_t *v; /* encoded value */
  uint32_t idx;     /* position, to keep the sort deterministic */
  char num[32];     /* key text for numbers and booleans */
} sl_codec_entry_t;

static const uint8_t *sl_codec_entry_key(const sl_codec_entry_t *e) {
  return e->k ? e->k : e->owned ? e->owned : (const uint8_t *)e->num;
}

static int sl_codec_entry_cmp(const void *a, const void *b) {
  const sl_codec_entry_t *x = a, *y = b;
  size_t n = x->klen < y->klen ? x->klen : y->klen;
  int c = n ? memcmp(sl_codec_entry_key(x), sl_codec_entry_key(y), n) : 0;
  if (c)
    return c;
  if (x->klen != y->klen)
    return x->klen < y->klen ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* A growable entry list that starts in the caller's stack array. */
typedef struct sl_codec_entries_s {
  sl_codec_entry_t *e;
  size_t n, cap;
  int heap;
} sl_codec_entries_t;

static sl_codec_entry_t *sl_codec_entries_add(sl_codec_entries_t *es) {
  if (es->n == es->cap) {
    if (es->cap > SIZE_MAX / 2 / sizeof(sl_codec_entry_t))
      return NULL;
    size_t cap = es->cap * 2;
    sl_codec_entry_t *e =
        es->heap ? realloc(es->e, cap * sizeof(*e)) : malloc(cap * sizeof(*e));
    if (!e)
      return NULL;
    if (!es->heap)
      memcpy(e, es->e, es->n * sizeof(*e));
    es->e = e;
    es->cap = cap;
    es->heap = 1;
  }
  sl_codec_entry_t *x = &es->e[es->n];
  memset(x, 0, offsetof(sl_codec_entry_t, num));
  x->idx = (uint32_t)es->n++;
  return x;
}

static void sl_codec_entries_free(sl_codec_entries_t *es) {
  for (size_t i = 0; i < es->n; i++)
    free(es->e[i].owned);
  if (es->heap)
    free(es->e);
}

/* Sets e's key text from the encoded key at p; returns the byte after it. */
static const uint8_t *sl_codec_key_text(sl_codec_entry_t *e, const uint8_t *p,
                                        const uint8_t *end, int depth,
                                        int mode) {
  uint32_t tag;
  const uint8_t *q = sl_codec_ldu(p, end, &tag);
  if (!q)
    return NULL;
  if (tag >= SL_TAG_STR) {
    if (tag - SL_TAG_STR > (size_t)(end - q))
      return NULL;
    e->k = q;
    e->klen = tag - SL_TAG_STR;
    return q + e->klen;
  }
  if (tag == SL_TAG_FALSE || tag == SL_TAG_TRUE) {
    e->klen = (size_t)sprintf(e->num, tag == SL_TAG_TRUE ? "true" : "false");
    return q;
  }
  if (tag == SL_TAG_INT && end - q >= 4) {
    e->klen = sl_codec_fmtnum(e->num, (double)(int32_t)sl_codec_ld32(q));
    return q + 4;
  }
  if (tag == SL_TAG_NUM && end - q >= 8) {
    e->klen = sl_codec_fmtnum(e->num, sl_codec_ldnum(q));
    return q + 8;
  }
  /* nil ("table index is nil" in LuaJIT), cut, unsupported, nested key */
  if (tag < SL_TAG_TAB || tag > SL_TAG_TAB_MAX || mode == SL_LINE_KEY)
    return NULL;
  sl_buf_t tmp; /* a table as a key: its JSON text */
  sl_buf_init(&tmp);
  q = sl_codec_put_obj(&tmp, p, end, depth, SL_LINE_KEY);
  e->klen = tmp.len;
  e->owned = sl_buf_take(&tmp, NULL);
  return q;
}

/* Collects the non-nil array slots and hash pairs of a table at p. */
static const uint8_t *sl_codec_collect(sl_codec_entries_t *es, const uint8_t *p,
                                       const uint8_t *end,
                                       const sl_codec_tab_t *t, int depth,
                                       int mode) {
  const char *err;
  int skip_where = mode == SL_LINE_KEY ? SL_SKIP_IN_KEY : 0;
  for (uint32_t i = 0; i < t->narr; i++) {
    const uint8_t *v = p;
    if (!(p = sl_codec_skip(p, end, depth + 1, skip_where, &err)))
      return NULL;
    if (sl_codec_is_nil(v, p))
      continue;
    sl_codec_entry_t *e = sl_codec_entries_add(es);
    if (!e)
      return NULL;
    e->klen = (size_t)sprintf(e->num, "%" PRIu64, (uint64_t)i + t->base);
    e->v = v;
  }
  for (uint32_t i = 0; i < t->nhash; i++) {
    sl_codec_entry_t *e = sl_codec_entries_add(es);
    if (!e || !(p = sl_codec_key_text(e, p, end, depth + 1, mode)))
      return NULL;
    e->v = p;
    if (!(p = sl_codec_skip(p, end, depth + 1, skip_where, &err)))
      return NULL;
    if (sl_codec_is_nil(e->v, p)) { /* only in hostile input: drop the pair */
      free(e->owned);
      es->n--;
    }
  }
  return p;
}

static int sl_codec_put_entries(sl_buf_t *out, sl_codec_entries_t *es,
                                const uint8_t *end, int depth, int mode) {
  if (es->n > 1)
    qsort(es->e, es->n, sizeof(*es->e), sl_codec_entry_cmp);
  if (sl_buf_putc(out, '{') < 0)
    return -1;
  for (size_t i = 0; i < es->n; i++) {
    const sl_codec_entry_t *e = &es->e[i];
    if ((i && sl_buf_putc(out, ',') < 0) ||
        sl_codec_put_jstr(out, sl_codec_entry_key(e), e->klen) < 0 ||
        sl_buf_putc(out, ':') < 0 ||
        !sl_codec_put_obj(out, e->v, end, depth + 1, mode))
      return -1;
  }
  return sl_buf_putc(out, '}');
}

/* The table as a JSON object with keys sorted bytewise. */
static const uint8_t *sl_codec_put_object(sl_buf_t *out, const uint8_t *p,
                                          const uint8_t *end,
                                          const sl_codec_tab_t *t, int depth,
                                          int mode) {
  sl_codec_entry_t stack[8];
  sl_codec_entries_t es = {stack, 0, 8, 0};
  p = sl_codec_collect(&es, p, end, t, depth, mode);
  if (p && sl_codec_put_entries(out, &es, end, depth, mode) < 0)
    p = NULL;
  sl_codec_entries_free(&es);
  return p;
}

/* 1 if none of the n objects at p is nil, 0 if one is, -1 if malformed. */
static int sl_codec_no_nils(const uint8_t *p, const uint8_t *end, uint32_t n,
                            int depth, int mode) {
  const char *err;
  int where = mode == SL_LINE_KEY ? SL_SKIP_IN_KEY : 0;
  for (uint32_t i = 0; i < n; i++) {
    if (sl_codec_is_nil(p, end))
      return 0;
    if (!(p = sl_codec_skip(p, end, depth + 1, where, &err)))
      return -1;
  }
  return 1;
}

/* The n array objects at p as a JSON array (none of them is nil). */
static const uint8_t *sl_codec_put_array(sl_buf_t *out, const uint8_t *p,
                                         const uint8_t *end, uint32_t n,
                                         int depth, int mode) {
  if (sl_buf_putc(out, '[') < 0)
    return NULL;
  for (uint32_t i = 0; i < n; i++)
    if ((i && sl_buf_putc(out, ',') < 0) ||
        !(p = sl_codec_put_obj(out, p, end, depth + 1, mode)))
      return NULL;
  return sl_buf_putc(out, ']') < 0 ? NULL : p;
}

/* A table: a JSON array when it is a sequence (1-based array part, no
 * holes, no hash part), else an object. Each level scans its children once
 * before writing them, so the work is linear in the input times the depth. */
static const uint8_t *sl_codec_put_table(sl_buf_t *out, const uint8_t *p,
                                         const uint8_t *end, uint32_t tag,
                                         int depth, int mode) {
  sl_codec_tab_t t;
  if (depth >= SL_CODEC_MAX_DEPTH || !(p = sl_codec_tab_head(p, end, tag, &t)))
    return NULL;
  mode = mode == SL_LINE_TOP ? SL_LINE_JSON : mode;
  if (t.nhash == 0 && t.base == 1 && t.narr > 0) {
    int seq = sl_codec_no_nils(p, end, t.narr, depth, mode);
    if (seq < 0)
      return NULL;
    if (seq)
      return sl_codec_put_array(out, p, end, t.narr, depth, mode);
  }
  return sl_codec_put_object(out, p, end, &t, depth, mode);
}

/* Appends one object and returns the byte after it (NULL: malformed, OOM). */
static const uint8_t *sl_codec_put_obj(sl_buf_t *out, const uint8_t *p,
                                       const uint8_t *end, int depth,
                                       int mode) {
  uint32_t tag;
  if (!(p = sl_codec_ldu(p, end, &tag)))
    return NULL;
  int json = mode != SL_LINE_TOP, rc;
  if (tag >= SL_TAG_STR) {
    size_t n = tag - SL_TAG_STR;
    if (n > (size_t)(end - p))
      return NULL;
    rc = json ? sl_codec_put_jstr(out, p, n) : sl_buf_append(out, p, n);
    return rc < 0 ? NULL : p + n;
  }
  switch (tag) {
  case SL_TAG_NIL:
    rc = sl_buf_puts(out, json ? "null" : "nil");
    break;
  case SL_TAG_FALSE:
    rc = sl_buf_puts(out, "false");
    break;
  case SL_TAG_TRUE:
    rc = sl_buf_puts(out, "true");
    break;
  case SL_TAG_INT:
    if (end - p < 4)
      return NULL;
    rc = sl_codec_put_num(out, (double)(int32_t)sl_codec_ld32(p), json);
    p += 4;
    break;
  case SL_TAG_NUM:
    if (end - p < 8)
      return NULL;
    rc = sl_codec_put_num(out, sl_codec_ldnum(p), json);
    p += 8;
    break;
  default:
    if (tag >= SL_TAG_TAB && tag <= SL_TAG_TAB_MAX)
      return sl_codec_put_table(out, p, end, tag, depth, mode);
    return NULL;
  }
  return rc < 0 ? NULL : p;
}

int sl_codec_line(sl_buf_t *out, const uint8_t *obj, const uint8_t *end) {
  if (!obj || !end || obj >= end)
    return -1;
  size_t mark = out->len;
  if (!sl_codec_put_obj(out, obj, end, 0, SL_LINE_TOP)) {
    out->len = mark;
    return -1;
  }
  return 0;
}
