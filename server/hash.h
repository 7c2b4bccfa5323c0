/* hash.h - the hashes of hash.c that are not the key hash (that one,
 * sl_hash_bytes, is part of the Lua API: luaapi.h).
 */
#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a (64-bit) of p[0..n), continuing from h: start with
 * SL_FNV1A_INIT. Tells whether a watched file's content changed. */
#define SL_FNV1A_INIT 1469598103934665603ull
uint64_t sl_hash_fnv1a(uint64_t h, const void *p, size_t n);

#endif
