/* admin.h - the admin HTTP server on the I/O loop (docs/operations.md).
 *
 * Listens on the conf's `admin = "HOST:PORT"` (plan->admin). Requests are
 * parsed with Debian's libhttp-parser, bounded (16 KiB of request line and
 * headers, 1 MiB of body) and answered once, with Connection: close. A
 * malformed request gets 400, an unknown path 404, a wrong method 405.
 *
 *   GET  /health        200 "ok" while running; 503 while starting, stopping
 *                       or after a failure began
 *   GET  /metrics       Prometheus text format 0.0.4
 *   GET  /status        JSON: pipeline, topology, instances per worker,
 *                       checkpoints, script versions, reloads, last errors
 *   GET  /state/OP/KEY  JSON of KEY's state in operator OP, asked of the
 *                       worker that hosts the instance owning KEY
 *   POST /checkpoint    takes a checkpoint; answers when it is stored (200)
 *                       or failed (500); ?wait=false: 202 at once; 409
 *                       without a checkpoint block
 *   POST /reload        reloads the scripts and checks the conf (202)
 *
 * Everything runs on the I/O thread except sl_admin_reply (any thread: a
 * worker answering a state query). The bodies of /metrics and /status are
 * rendered by metrics.c and status.c.
 */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include "core.h"

#include <stdint.h>

/* I/O thread, once the loop is set up: listen when the plan has an admin
 * address. 0 ok (or nothing to do), -1 cannot listen (logged). */
int sl_admin_start(sl_core_t *c);
/* I/O thread: answer the state queries the workers have replied to. */
void sl_admin_pump(sl_core_t *c);
/* Any thread: the answer to state query `seq`: status 200 with the state's
 * JSON text, 404 (no state for that key) or 500 with an error message. */
void sl_admin_reply(sl_core_t *c, uint64_t seq, int status, const char *text);
void sl_admin_stop(sl_core_t *c);  /* shutdown: close the handles */
void sl_admin_close(sl_core_t *c); /* after the loop ended: free */

#endif
