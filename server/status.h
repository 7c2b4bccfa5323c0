/* status.h - the JSON of GET /status, and the pipeline's state (status.c). */
#ifndef SL_STATUS_H
#define SL_STATUS_H

#include "core.h"
#include "text.h"

/* I/O thread: 1 while the pipeline runs (started, not stopping, no
 * failure): /health is 200 and sluice_up is 1. */
int sl_status_running(const sl_core_t *c);
/* "starting" | "running" | "stopping" | "failed". */
const char *sl_status_state(const sl_core_t *c);
/* "source" | "operator" | "sink" for an sl_node_type_t. */
const char *sl_status_type_name(int type);
/* I/O thread: appends the /status object to *out (caller checks oom). */
void sl_status_render(sl_core_t *c, sl_text_t *out);

#endif
