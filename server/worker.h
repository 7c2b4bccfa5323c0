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

#endif
