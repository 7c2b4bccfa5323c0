/* test_ckpt.c - checkpoint images (ckpt.h): round trips of every entry kind
 * and size, the byte layout and its CRC-32, every truncation and every
 * single-byte flip of a small image, garbage and hostile lengths, and
 * sl_ckpt_find over 128 key groups of several operators. Main thread only.
 */
#include "check.h"
#include "ckpt.h"

#include <stdint.h>
#include <stdio.h>

/* A bitwise CRC-32 (IEEE), independent of ckpt.c's table. */
static uint32_t ref_crc32(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites the trailing CRC so a doctored image passes the checksum. */
static void reseal(uint8_t *img, size_t len) {
  put_u32(img + len - 4, ref_crc32(img, len - 4));
}

static void check_same(const sl_ckpt_t *a, const sl_ckpt_t *b) {
  CHECK(a->id == b->id);
  CHECK_EQ_INT(a->final, b->final);
  CHECK(a->time_ms == b->time_ms);
  CHECK_EQ_INT(a->n, b->n);
  for (int i = 0; i < a->n && i < b->n; i++) {
    const sl_ckpt_entry_t *x = &a->e[i], *y = &b->e[i];
    if (x->kind != y->kind || x->kg != y->kg || x->offset != y->offset ||
        strcmp(x->node, y->node) != 0 || x->len != y->len ||
        (x->len && memcmp(x->blob, y->blob, x->len) != 0))
      CHECK_FAIL_("entry %d differs", i);
  }
  sl_check_passed++;
}

static void round_trip(const sl_ckpt_t *c) {
  uint8_t *img;
  size_t len;
  sl_ckpt_t d;
  const char *why = NULL;
  CHECK_EQ_INT(sl_ckpt_encode(c, &img, &len), 0);
  CHECK_EQ_INT(get_u32(img + len - 4), ref_crc32(img, len - 4));
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), 0);
  check_same(c, &d);
  sl_ckpt_free(&d);
  free(img);
}

/* The image of the small checkpoint most tests doctor. */
static void small_image(uint8_t **img, size_t *len) {
  sl_ckpt_t c;
  sl_ckpt_init(&c, 7);
  c.time_ms = 1234.5;
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "src", 42), 0);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", "ab", 2), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "count", 3, "xyz", 3), 0);
  CHECK_EQ_INT(sl_ckpt_encode(&c, img, len), 0);
  sl_ckpt_free(&c);
}

static void test_crc_reference(void) {
  CHECK_EQ_INT(ref_crc32((const uint8_t *)"123456789", 9), 0xCBF43926u);
}

static void test_layout(void) {
  sl_ckpt_t c;
  uint8_t *img;
  size_t len;
  sl_ckpt_init(&c, 0x0102030405060708ull);
  c.final = 1;
  c.time_ms = 2.0;
  CHECK_EQ_INT(sl_ckpt_encode(&c, &img, &len), 0);
  CHECK_EQ_INT(len, 36);
  CHECK_EQ_MEM(img, 4, "SLCK", 4);
  CHECK_EQ_INT(get_u32(img + 4), 1);
  CHECK_EQ_INT(img[8], 0x08);
  CHECK_EQ_INT(img[15], 0x01);
  CHECK_EQ_INT(get_u32(img + 16), 1); /* flags: final */
  CHECK_EQ_INT(img[31 - 4], 0x40);    /* 2.0 = 0x4000000000000000 */
  CHECK_EQ_INT(get_u32(img + 28), 0); /* count */
  free(img);
  sl_ckpt_free(&c);
}

static void test_round_trips(void) {
  sl_ckpt_t c;
  sl_ckpt_init(&c, 1); /* no entries */
  round_trip(&c);
  c.final = 1;
  c.time_ms = 1.7e12 + 0.25;
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "lines", INT64_MAX), 0);
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "gen", -5), 0);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", "", 0), 0);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "file", "pending\0x", 9), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "count", 0, NULL, 0), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "count", 127, "\xff\x00\x01", 3), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "", INT32_MAX, "k", 1), 0);
  round_trip(&c);
  CHECK(c.e[2].blob == NULL && c.e[2].len == 0);
  sl_ckpt_free(&c);
  sl_ckpt_init(&c, UINT64_MAX); /* re-init after free */
  round_trip(&c);
  sl_ckpt_free(&c);
}

static void test_large_blob(void) {
  size_t n = 1u << 20;
  uint8_t *big = malloc(n);
  CHECK(big != NULL);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)(i * 131 + (i >> 9));
  sl_ckpt_t c;
  sl_ckpt_init(&c, 9);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "win", 5, big, n), 0);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", big, n), 0);
  round_trip(&c);
  sl_ckpt_free(&c);
  free(big);
}

static void test_many_entries(void) {
  sl_ckpt_t c;
  char node[32], blob[32];
  sl_ckpt_init(&c, 10);
  for (int i = 0; i < 10000; i++) {
    snprintf(node, sizeof(node), "op%d", i % 7);
    snprintf(blob, sizeof(blob), "state-%d", i);
    CHECK_EQ_INT(sl_ckpt_add_state(&c, node, i, blob, strlen(blob)), 0);
  }
  round_trip(&c);
  sl_ckpt_free(&c);
}

static void test_truncations(void) {
  uint8_t *img;
  size_t len;
  sl_ckpt_t d;
  small_image(&img, &len);
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
    CHECK(copy != NULL);
    memcpy(copy, img, cut);
    const char *why = NULL;
    if (sl_ckpt_decode(copy, cut, &d, &why) != -1 || !why)
      CHECK_FAIL_("truncation to %zu bytes decoded", cut);
    CHECK_EQ_INT(d.n, 0);
    free(copy);
  }
  sl_check_passed++;
  const char *why = NULL;
  CHECK_EQ_INT(sl_ckpt_decode(NULL, 0, &d, &why), -1);
  CHECK_EQ_STR(why, "truncated");
  CHECK_EQ_INT(sl_ckpt_decode(img, len - 1, &d, NULL), -1); /* why optional */
  free(img);
}

static void test_flips(void) {
  uint8_t *img;
  size_t len;
  sl_ckpt_t d;
  static const uint8_t masks[] = {0x01, 0x10, 0x80, 0xFF};
  small_image(&img, &len);
  for (size_t i = 0; i < len; i++)
    for (size_t m = 0; m < sizeof(masks); m++) {
      const char *why = NULL;
      img[i] ^= masks[m];
      if (sl_ckpt_decode(img, len, &d, &why) != -1 || !why)
        CHECK_FAIL_("flip 0x%02x at byte %zu not detected", masks[m], i);
      img[i] ^= masks[m];
    }
  sl_check_passed++;
  const char *why = NULL;
  img[0] ^= 1;
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "bad magic");
  img[0] ^= 1;
  img[4] = 2;
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "unsupported version");
  img[4] = 1;
  img[20] ^= 4;
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "bad checksum");
  img[20] ^= 4;
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), 0);
  sl_ckpt_free(&d);
  free(img);
}

/* Valid magic, version and CRC, hostile contents. */
static void test_hostile(void) {
  uint8_t *img;
  size_t len;
  sl_ckpt_t d;
  const char *why;
  small_image(&img, &len);
  put_u32(img + 28, 0xFFFFFFFFu); /* entry count */
  reseal(img, len);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "truncated");
  put_u32(img + 28, 3);
  put_u32(img + 33, 0xFFFFFFF0u); /* first node length */
  reseal(img, len);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "truncated");
  put_u32(img + 33, 3);
  img[32] = 9; /* kind */
  reseal(img, len);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "bad entry kind");
  img[32] = 1;
  put_u32(img + 28, 2); /* fewer entries than the bytes hold */
  reseal(img, len);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "trailing bytes");
  put_u32(img + 28, 3);
  img[37] = 0; /* a nul inside the node name "src" */
  reseal(img, len);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &d, &why), -1);
  CHECK_EQ_STR(why, "bad node name");
  free(img);
}

static void test_garbage(void) {
  uint8_t buf[4096];
  sl_ckpt_t d;
  uint32_t x = 12345;
  for (int round = 0; round < 2000; round++) {
    size_t len = (size_t)(round * 37) % sizeof(buf);
    for (size_t i = 0; i < len; i++) {
      x = x * 1103515245u + 12345u;
      buf[i] = (uint8_t)(x >> 16);
    }
    if (round % 2 && len >= 36) { /* a plausible header and a valid CRC */
      memcpy(buf, "SLCK\1\0\0\0", 8);
      reseal(buf, len);
    }
    const char *why = NULL;
    if (sl_ckpt_decode(buf, len, &d, &why) == 0)
      sl_ckpt_free(&d); /* possible in principle; must still be sound */
    else if (!why)
      CHECK_FAIL_("no reason for garbage of %zu bytes", len);
  }
  sl_check_passed++;
}

static void test_find(void) {
  sl_ckpt_t c;
  char node[16];
  uint8_t *img;
  size_t len;
  sl_ckpt_init(&c, 3);
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "in", 100), 0);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", "s", 1), 0);
  for (int op = 0; op < 4; op++)
    for (int32_t kg = 0; kg < 128; kg++) {
      snprintf(node, sizeof(node), "op%d", op);
      CHECK_EQ_INT(sl_ckpt_add_state(&c, node, kg, &kg, sizeof(kg)), 0);
    }
  CHECK_EQ_INT(sl_ckpt_encode(&c, &img, &len), 0);
  sl_ckpt_free(&c);
  CHECK_EQ_INT(sl_ckpt_decode(img, len, &c, NULL), 0);
  free(img);
  const sl_ckpt_entry_t *e = sl_ckpt_find(&c, SL_CKPT_SOURCE, "in", -1);
  CHECK(e && e->offset == 100);
  CHECK(sl_ckpt_find(&c, SL_CKPT_SOURCE, "in", 7) == e); /* kg ignored */
  e = sl_ckpt_find(&c, SL_CKPT_SINK, "out", -1);
  CHECK(e && e->len == 1 && e->blob[0] == 's');
  CHECK(sl_ckpt_find(&c, SL_CKPT_SINK, "in", -1) == NULL);
  CHECK(sl_ckpt_find(&c, SL_CKPT_STATE, "in", 0) == NULL);
  CHECK(sl_ckpt_find(&c, SL_CKPT_STATE, "op4", 0) == NULL);
  CHECK(sl_ckpt_find(&c, SL_CKPT_STATE, "op0", 128) == NULL);
  CHECK(sl_ckpt_find(&c, SL_CKPT_STATE, "op", 0) == NULL);
  for (int op = 0; op < 4; op++)
    for (int32_t kg = 0; kg < 128; kg++) {
      snprintf(node, sizeof(node), "op%d", op);
      e = sl_ckpt_find(&c, SL_CKPT_STATE, node, kg);
      int32_t v;
      if (!e || e->len != sizeof(v) || e->kg != kg)
        CHECK_FAIL_("%s/%d not found", node, kg);
      memcpy(&v, e->blob, sizeof(v));
      CHECK_EQ_INT(v, kg);
    }
  sl_ckpt_free(&c);
  CHECK(sl_ckpt_find(&c, SL_CKPT_STATE, "op0", 0) == NULL);
}

int main(void) {
  test_crc_reference();
  test_layout();
  test_round_trips();
  test_large_blob();
  test_many_entries();
  test_truncations();
  test_flips();
  test_hostile();
  test_garbage();
  test_find();
  return CHECK_DONE();
}
