/* worker.h - a worker thread: one libuv loop and one LuaJIT state running
 * the operator instances pinned to it.
 *
 * Created on the main thread (which loads scripts and runs every `open`, so
 * a broken script fails the start before any thread runs), then started; from
 * then on only the worker's own thread touches its loop and Lua state, until
 * sl_worker_join returns.
 */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include "core.h"

/* Builds worker `thread` (1..N). NULL on failure with *err (caller frees). */
sl_worker_t *sl_worker_create(sl_core_t *c, int thread, char **err);
int sl_worker_start(sl_worker_t *w); /* 0 ok, -1 no thread */
void sl_worker_stop(sl_worker_t *w); /* any thread: finish and exit */
void sl_worker_join(sl_worker_t *w);
void sl_worker_destroy(sl_worker_t *w); /* after join (or never started) */
uv_async_t *sl_worker_wake(sl_worker_t *w);
/* An operator instance's counts, as its Lua side keeps them (records in and
 * out, whether by channel or by direct call; errors). Only after
 * sl_worker_join (or before start). 0 ok. */
int sl_worker_stats(sl_worker_t *w, int gid, uint64_t *in, uint64_t *out,
                    uint64_t *errors);
/* Any thread: queue a reload message for the worker (watch.h: kind
 * SL_WMSG_*; src only for PREPARE; both copied) and wake it. 0, -1 OOM. */
int sl_worker_post(sl_worker_t *w, int kind, uint64_t seq, const char *script,
                   const char *src, size_t len);

/* Any thread (the admin server): ask for the JSON of `key`'s state in
 * instance gid; the worker answers with sl_admin_reply(seq). 0, -1 OOM. */
int sl_worker_query(sl_worker_t *w, int gid, uint64_t seq, const char *key,
                    size_t len);
/* Any thread: the worker's Lua memory in bytes, as last published. */
uint64_t sl_worker_lua_bytes(sl_worker_t *w);

#endif
