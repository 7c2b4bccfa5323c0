/* luaapi.h - the C functions a worker's Lua side calls through the FFI.
 *
 * bindings/sluice/runtime.lua declares the same struct with ffi.cdef and
 * calls these function pointers from JIT-compiled code (no Lua C API on the
 * hot path, in the style of lua-resty-core). A worker fills one per LuaJIT
 * state; the harness module (bindings/core.c) exposes one whose ctx, push and
 * fail are NULL (the harness supplies those in Lua).
 *
 * KEEP IN SYNC with the ffi.cdef in bindings/sluice/runtime.lua.
 */
#ifndef SL_LUAAPI_H
#define SL_LUAAPI_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_lua_api_s {
  void *ctx; /* the worker (sl_worker_t *) */
  /* Copies an encoded batch of nrec records and sends it on channel cid. */
  void (*push)(void *ctx, int32_t cid, const uint8_t *data, size_t len,
               uint32_t nrec);
  /* The key hash used for key grouping (murmur3 32-bit, seed 0). */
  uint32_t (*hash)(const char *s, size_t n);
  /* One log line (level: 0 debug, 1 info, 2 warn, 3 error). */
  void (*log)(int level, const char *component, const char *msg);
  /* on_error = "stop": the pipeline ends with `code`. */
  void (*fail)(void *ctx, int code, const char *msg);
  /* Wall-clock milliseconds since the epoch. */
  double (*now_ms)(void);
  /* A monotonic clock in ns (uv_hrtime). NULL in the harness. */
  uint64_t (*hrtime)(void);
  /* Instance gid has just run nrec records a same-worker upstream handed
   * it (local exchange), starting at start_ns (hrtime): feeds its latency
   * histogram and busy time as a channel batch would. NULL in the harness. */
  void (*observe)(void *ctx, int32_t gid, uint32_t nrec, uint64_t start_ns);
} sl_lua_api_t;

/* The hash behind api->hash (server/hash.c). */
uint32_t sl_hash_bytes(const char *s, size_t n);
/* Wall-clock ms since the epoch (server/log.c). */
double sl_now_ms(void);

#endif
