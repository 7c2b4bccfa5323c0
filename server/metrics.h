/* metrics.h - the Prometheus text of GET /metrics (metrics.c). */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include "core.h"
#include "text.h"

/* I/O thread: appends every metric's HELP, TYPE and samples to *out (the
 * caller checks out->oom and frees it). */
void sl_metrics_render(sl_core_t *c, sl_text_t *out);

#endif
