/* sink_render.h - an encoded batch as output lines, for the line sinks.
 *
 * The stdout, file (sink_line.c) and tcp (sink_tcp.c) sinks write one line
 * per record: a string as is, a number via tostring, a table as JSON (see
 * sl_codec_line). I/O thread.
 */
#ifndef SL_SINK_RENDER_H
#define SL_SINK_RENDER_H

#include "codec.h"

#include <stddef.h>
#include <stdint.h>

/* Appends one line + "\n" per record of the batch data[0..len) to out, and
 * sets *nrec to the number of records. 0 ok; -1 for a malformed batch (or
 * out of memory): then out is left as it was and *nrec is 0. */
int sl_sink_render(sl_buf_t *out, const uint8_t *data, size_t len,
                   uint64_t *nrec);

#endif
