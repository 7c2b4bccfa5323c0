/* watch.h - hot reload of operator scripts (I/O thread); docs/reload.md.
 *
 * Watches every operator script (a libuv fs event on the script's folder,
 * filtered by file name, debounced; or, when fs events cannot be had or
 * SLUICE_WATCH=poll, a 1 s stat poll of the file), and SIGHUP. A real change
 * (the content's hash differs from the last one seen) starts a two-phase
 * reload: PREPARE goes to every worker that hosts an instance of the
 * script (with the file's content, read once here); each compiles it in a
 * fresh sandbox and runs its open, keeping the result aside, and replies.
 * If every reply is OK, COMMIT (each worker swaps the new version in
 * between batches, or at the next barrier when checkpointing); else ABORT
 * (the old version keeps running; the error is logged with FILE:LINE and
 * counted). One reload runs at a time; changes that come meanwhile queue.
 */
#ifndef SL_WATCH_H
#define SL_WATCH_H

#include "core.h"

#include <stddef.h>
#include <stdint.h>

/* Messages from the I/O thread to a worker (worker.c). */
enum { SL_WMSG_PREPARE = 1, SL_WMSG_COMMIT, SL_WMSG_ABORT };

/* Before the workers are built: reads every script's hash. 0 ok, -1 OOM. */
int sl_watch_create(sl_core_t *c);
/* After the workers started: fs events / polls, SIGHUP. */
int sl_watch_start(sl_core_t *c);
/* I/O thread: take in the workers' replies, move reloads on. */
void sl_watch_pump(sl_core_t *c);
/* Any thread (a worker): the answer to PREPARE `seq` (err NULL = OK). */
void sl_watch_reply(sl_core_t *c, uint64_t seq, int thread, const char *err);
/* I/O thread: reload every script now (SIGHUP, later POST /reload). */
void sl_watch_reload_all(sl_core_t *c, const char *why);
/* What script i (0, 1, ...) runs, for GET /status. */
typedef struct sl_watch_info_s {
  const char *path;  /* as errors name it */
  int version;       /* 1 + the reloads committed (since the conf loaded) */
  uint64_t hash;     /* FNV-1a of the committed version's source */
  double since_ms;   /* when it was committed (Unix ms) */
  const char *error; /* the last failed reload's error, or NULL */
  double error_ms;
} sl_watch_info_t;
/* I/O thread: 0 and *out filled (strings owned by the watcher, valid until
 * the next reload), or -1 past the last script. */
int sl_watch_script(sl_core_t *c, int i, sl_watch_info_t *out);
void sl_watch_stop(sl_core_t *c);  /* shutdown: close the handles */
void sl_watch_close(sl_core_t *c); /* after the loop ended: free */

#endif
