/* codec.h - the record codec in C: LuaJIT string.buffer serialization format.
 *
 * Batches of records travel between threads encoded exactly as LuaJIT's
 * `buffer.encode` writes a 1-based array: { v1, k1, t1, v2, k2, t2, ... }
 * (value, key or nil, event time in ms). Sources (C, I/O thread) write that
 * format with sl_codec_writer_*; sinks (C, I/O thread) read it with
 * sl_codec_reader_* and turn values into output lines with sl_codec_line().
 * Lua (workers) reads and writes it with string.buffer directly.
 *
 * Supported objects: nil, false, true, numbers (0x07 double; 0x06 int32 on
 * decode), strings, tables (array and/or hash part, nested; no metatables,
 * no dictionary refs). Anything else is a decode error.
 */
#ifndef SL_CODEC_H
#define SL_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. Owns `data` (free with sl_buf_free). */
typedef struct sl_buf_s {
  uint8_t *data;
  size_t len, cap;
} sl_buf_t;

void sl_buf_init(sl_buf_t *b);
void sl_buf_free(sl_buf_t *b);
int sl_buf_reserve(sl_buf_t *b, size_t extra); /* 0 ok, -1 OOM */
int sl_buf_append(sl_buf_t *b, const void *p, size_t n);
/* Detaches the bytes: returns data (caller frees with free()), resets b. */
uint8_t *sl_buf_take(sl_buf_t *b, size_t *len);

/* Batch writer: begin, add records, finish. On OOM a call returns -1 and the
 * batch is unusable (reset with sl_codec_writer_begin). */
typedef struct sl_codec_writer_s {
  sl_buf_t buf;
  uint32_t nrec;
  size_t count_at; /* offset of the array-length prefix to patch */
} sl_codec_writer_t;

void sl_codec_writer_init(sl_codec_writer_t *w);
void sl_codec_writer_free(sl_codec_writer_t *w);
int sl_codec_writer_begin(sl_codec_writer_t *w);
/* A record whose value is a string, with no key (nil), at time_ms. */
int sl_codec_writer_add_string(sl_codec_writer_t *w, const char *s, size_t n,
                               double time_ms);
/* A record whose value is a table of npairs string pairs, kv[2i] the key and
 * kv[2i+1] the value (lens[] their lengths; NULL pointers only for length
 * 0), with no key (nil), at time_ms. A key given twice keeps its last value
 * (as a Lua table would); no pairs is the empty table {}. */
int sl_codec_writer_add_fields(sl_codec_writer_t *w, const char *const *kv,
                               const size_t *lens, size_t npairs,
                               double time_ms);
/* Patches the header. The bytes are w->buf.data[0..w->buf.len). */
int sl_codec_writer_finish(sl_codec_writer_t *w);

/* Batch reader over bytes it does not own. */
typedef struct sl_codec_reader_s {
  const uint8_t *p, *end;
  uint32_t nrec;     /* records in the batch */
  uint32_t next;     /* records consumed */
  const char *error; /* set on malformed input */
} sl_codec_reader_t;

/* Parses the batch header. 0 ok, -1 malformed (reader.error says why). */
int sl_codec_reader_init(sl_codec_reader_t *r, const uint8_t *data, size_t len);

/* One record as spans of encoded objects inside the batch. */
typedef struct sl_codec_record_s {
  const uint8_t *value, *value_end;
  const uint8_t *key, *key_end;
  double time_ms;
} sl_codec_record_t;

/* 1 = got a record, 0 = no more, -1 = malformed (r->error). */
int sl_codec_reader_next(sl_codec_reader_t *r, sl_codec_record_t *rec);

/* Appends the output line for one encoded value (no newline): a string as
 * is, a number as Lua's tostring (%.14g; integers without ".0"), true/false,
 * nil as "nil", a table as compact JSON (keys sorted; an array part as a JSON
 * array when the table has no hash part, else an object with "1","2",...).
 * 0 ok, -1 malformed or OOM. */
int sl_codec_line(sl_buf_t *out, const uint8_t *obj, const uint8_t *end);

#endif
