/* confwatch.h - reloading the conf (I/O thread); docs/reload.md.
 *
 * Watches the pipeline's conf file (fs events on its folder, or a 1 s poll
 * with SLUICE_WATCH=poll) and checks it again on SIGHUP. A changed conf is
 * validated like `sluice check`. Invalid: the errors are logged with
 * FILE:LINE and the running pipeline carries on. Valid: the pipeline stops
 * its sources and drains into a savepoint (its final checkpoint, in the
 * conf's store, or in a process-local memory store when the conf has no
 * checkpoint block), and sluice then starts the new plan in-process from
 * that savepoint: operators matched by name keep their state (key groups are
 * redistributed for a new parallelism), removed ones drop it, new ones start
 * empty, and sources resume where the savepoint left them.
 */
#ifndef SL_CONFWATCH_H
#define SL_CONFWATCH_H

#include "core.h"

int sl_confwatch_start(sl_core_t *c); /* 0 ok (a failure to watch is logged) */
/* Checks the conf now (SIGHUP); force: even if its content looks unchanged. */
void sl_confwatch_check(sl_core_t *c, int force);
void sl_confwatch_stop(sl_core_t *c);  /* shutdown: close handles */
void sl_confwatch_close(sl_core_t *c); /* after the loop: free */

#endif
