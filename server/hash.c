/* hash.c - the key hash behind key grouping: MurmurHash3 x86_32, seed 0;
 * and FNV-1a (hash.h), with which reload tells a changed file.
 *
 * Owns nothing; pure function, any thread (workers call it through the FFI,
 * see luaapi.h). Blocks are read little-endian byte by byte, so the result is
 * the reference MurmurHash3_x86_32 value on every platform.
 */
#include "hash.h"
#include "luaapi.h"

static inline uint32_t sl_hash_rotl(uint32_t x, int r) {
  return (x << r) | (x >> (32 - r));
}

static inline uint32_t sl_hash_load(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static inline uint32_t sl_hash_mixk(uint32_t k) {
  k *= 0xcc9e2d51u;
  k = sl_hash_rotl(k, 15);
  return k * 0x1b873593u;
}

static inline uint32_t sl_hash_fmix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

uint32_t sl_hash_bytes(const char *s, size_t n) {
  const uint8_t *p = (const uint8_t *)s;
  size_t nblocks = n / 4;
  uint32_t h = 0; /* seed */
  for (size_t i = 0; i < nblocks; i++) {
    h ^= sl_hash_mixk(sl_hash_load(p + 4 * i));
    h = sl_hash_rotl(h, 13);
    h = h * 5 + 0xe6546b64u;
  }
  const uint8_t *tail = p + 4 * nblocks;
  uint32_t k = 0;
  switch (n & 3) {
  case 3:
    k ^= (uint32_t)tail[2] << 16; /* fall through */
  case 2:
    k ^= (uint32_t)tail[1] << 8; /* fall through */
  case 1:
    k ^= tail[0];
    h ^= sl_hash_mixk(k);
  }
  h ^= (uint32_t)n; /* the reference hashes the length as a 32-bit int */
  return sl_hash_fmix(h);
}

uint64_t sl_hash_fnv1a(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}
