/* test_hash.c - sl_hash_bytes against published MurmurHash3 x86_32 (seed 0)
 * vectors, plus tail lengths and high bytes. Single-threaded.
 */
#include "check.h"
#include "luaapi.h"

static void check_vec(const char *s, size_t n, uint32_t want) {
  uint32_t got = sl_hash_bytes(s, n);
  if (got != want)
    fprintf(stderr, "hash of %zu bytes \"%.20s\": got 0x%08x want 0x%08x\n", n,
            s, got, want);
  CHECK_EQ_INT(got, want);
}

#define VEC(lit, want) check_vec(lit, sizeof(lit) - 1, want)

int main(void) {
  VEC("", 0x00000000u);
  VEC("a", 0x3c2569b2u);
  VEC("ab", 0x9bbfd75fu);
  VEC("abc", 0xb3dd93fau);
  VEC("abcd", 0x43ed676au);
  VEC("hello", 0x248bfa47u);
  VEC("Hello, world!", 0xc0363e43u);
  VEC("The quick brown fox jumps over the lazy dog", 0x2e4ff723u);
  VEC("\xff\xfe\xfd", 0xd2bef2dcu);
  char all[256];
  for (int i = 0; i < 256; i++)
    all[i] = (char)i;
  check_vec(all, sizeof(all), 0xe40a0e56u);
  /* NULL with length 0 is allowed (empty key) */
  CHECK_EQ_INT(sl_hash_bytes(NULL, 0), 0);
  return CHECK_DONE();
}
