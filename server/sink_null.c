/* sink_null.c - the `null` sink: takes every record and writes nothing.
 *
 * For benchmarks and for pipelines whose operators act on their own (a
 * tap, a side effect through `allow`): it costs the pipeline nothing but
 * the channel it reads, and it counts what it received like any sink
 * (sluice_sink_records_in_total). It never commits, so under exactly_once
 * it is refused like stdout (kinds.c reads that off the missing precommit).
 * It is also the example of adding a kind: this file, one line in kinds.c,
 * one entry in bindings/sluice/kinds.lua.
 *
 * I/O thread only.
 */
#include "endpoint.h"

static int null_start(sl_sink_t *k) {
  (void)k;
  return 0;
}

static int null_write(sl_sink_t *k, const uint8_t *data, size_t len) {
  (void)k, (void)data, (void)len;
  return 0;
}

static void null_flush(sl_sink_t *k) {
  (void)k;
}

static void null_done(sl_sink_t *k, sl_sink_cb done) {
  done(k);
}

const sl_sink_vt_t sl_sink_null_vt = {
    .kind = "null",
    .start = null_start,
    .write = null_write,
    .flush = null_flush,
    .finish = null_done,
    .close = null_done,
};
