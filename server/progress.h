/* progress.h - the live status line (I/O thread), like pv's.
 *
 * When stderr is a terminal, `sluice run` keeps one line at the bottom:
 * records in and out per second, how much of the bounded inputs has been
 * read, and the last checkpoint. Log lines clear it before they print, and
 * it is drawn again at the next tick. Off when stderr is not a terminal.
 */
#ifndef SL_PROGRESS_H
#define SL_PROGRESS_H

#include "core.h"

int sl_progress_start(sl_core_t *c); /* 0 (also when stderr is no tty) */
void sl_progress_stop(sl_core_t *c); /* clears the line, closes the timer */
void sl_progress_close(sl_core_t *c);

#endif
