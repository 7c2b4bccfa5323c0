/* endpoint.h - sources and sinks: the I/O thread's ends of a pipeline.
 *
 * A source reads records from outside (file, stdin, tcp, generator) and hands
 * them to the core with sl_source_emit(); the core batches them, routes the
 * batches to the channels of the source's downstream instances, and applies
 * back-pressure by calling the source's `pause` and `resume`. A sink gets
 * encoded batches through its `write` and writes one line per record.
 *
 * Every function here runs on the I/O thread (thread 0), which owns every
 * source, sink and their libuv handles. Each kind lives in its own file
 * (source_file.c, sink_tcp.c, ...), exports one vtable listed in kinds.c,
 * and reads its own settings from its sl_node_cfg_t (settings.h) at start.
 */
#ifndef SL_ENDPOINT_H
#define SL_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "codec.h"    /* sl_buf_t */
#include "settings.h" /* sl_node_cfg_t */

typedef struct sl_source_s sl_source_t;
typedef struct sl_sink_s sl_sink_t;
typedef void (*sl_source_cb)(sl_source_t *s);
typedef void (*sl_sink_cb)(sl_sink_t *k);

typedef struct sl_source_vt_s {
  const char *kind;
  /* Allocates s->impl, opens handles, starts producing. 0 ok; -1 after an
   * sl_log(ERROR) line saying why (the pipeline then fails to start). */
  int (*start)(sl_source_t *s);
  /* Back-pressure: stop reading until resume (idempotent). */
  void (*pause)(sl_source_t *s);
  void (*resume)(sl_source_t *s);
  /* Stop for good (SIGINT/SIGTERM). The source must call
   * sl_source_end(s, 0) unless it already ended. */
  void (*stop)(sl_source_t *s);
  /* After end: close every handle, free impl, then call done(s). */
  void (*close)(sl_source_t *s, sl_source_cb done);
  /* Replay (NULL for sources that cannot replay: tcp, stdin).
   * offset: the position of the next record not yet handed to
   * sl_source_emit (file: byte offset of the next line; generator: the next
   * sequence number), called between read callbacks. seek: called once
   * BEFORE start, to resume from such an offset. 0 ok, -1 logged. */
  int64_t (*offset)(sl_source_t *s);
  int (*seek)(sl_source_t *s, int64_t offset);
  /* Replay positions that are not a number (a Redis Stream entry id): used
   * instead of offset/seek when set. position appends the position of the
   * next record not yet emitted to *out; seek_position (before start)
   * resumes after such a position. */
  int (*position)(sl_source_t *s, sl_buf_t *out);
  int (*seek_position)(sl_source_t *s, const uint8_t *pos, size_t len);
  /* Checkpoint `id` is stored: the source may release what it covered
   * (a Redis source XACKs the entries up to the position it recorded when
   * barrier id was injected). NULL when not needed. */
  void (*committed)(sl_source_t *s, uint64_t id, const uint8_t *pos,
                    size_t len);
  /* What is available but not read yet, in `lag_unit` ("bytes" for a file:
   * its size past the offset; "records" for a bounded generator, or a
   * Redis Stream's entries not yet delivered to the group); -1 when not
   * known (now). NULL for sources without a notion of it (tcp, stdin). */
  int64_t (*lag)(sl_source_t *s);
  const char *lag_unit;
} sl_source_vt_t;

typedef struct sl_sink_vt_s {
  const char *kind;
  int (*start)(sl_sink_t *k); /* as for sources */
  /* One encoded batch (codec.h): write a line per record. The sink may
   * buffer. When it holds more than its limit it sets k->busy = 1, and
   * later calls sl_sink_ready(k) when it can take more. 0 ok, -1 malformed
   * batch (counted by the core as an error; the sink carries on). */
  int (*write)(sl_sink_t *k, const uint8_t *data, size_t len);
  /* Push buffered lines out; called at least every 100 ms. */
  void (*flush)(sl_sink_t *k);
  /* Every input ended: flush everything, then call done(k). */
  void (*finish)(sl_sink_t *k, sl_sink_cb done);
  /* Close every handle, free impl, then call done(k). */
  void (*close)(sl_sink_t *k, sl_sink_cb done);
  /* Committing sinks (NULL for the others). With cfg->exactly_once set,
   * `write` stages records instead of publishing them.
   * precommit: checkpoint `id`'s barrier has reached the sink: make every
   *   record staged so far durable (synchronously: write + fsync) and append
   *   the sink's state for checkpoint id to *state (e.g. the length the
   *   published file will have once id commits). 0 ok, -1 logged.
   * commit: checkpoint id is stored: publish what was staged up to its
   *   precommit (in order; asynchronous is fine). 0 ok, -1 logged.
   * precommit may also return 1: not now (its store is out of reach; it
   *   keeps what it staged): the core holds the barrier at the sink (its
   *   inputs stay blocked) and calls precommit again every 100 ms.
   * restore: called once BEFORE start with the state of the checkpoint
   *   being restored (NULL, 0 when starting empty): bring the published
   *   output back to exactly that state (e.g. truncate, or finish an
   *   interrupted commit) and drop whatever was staged. 0 ok, -1 logged. */
  int (*precommit)(sl_sink_t *k, uint64_t id, sl_buf_t *state);
  int (*commit)(sl_sink_t *k, uint64_t id);
  int (*restore)(sl_sink_t *k, const uint8_t *state, size_t len);
} sl_sink_vt_t;

struct sl_source_s {
  const sl_source_vt_t *vt;
  const sl_node_cfg_t *cfg;
  uv_loop_t *loop;
  void *impl; /* the kind's own state */
  void *core; /* the core's routing state (source.c) */
  int paused; /* set by the core around pause/resume */
  int ended;  /* set by sl_source_end */
  uint64_t records_out, errors;
};

struct sl_sink_s {
  const sl_sink_vt_t *vt;
  const sl_node_cfg_t *cfg;
  uv_loop_t *loop;
  void *impl;
  void *core;
  int busy;    /* set by the sink when full; cleared by sl_sink_ready */
  int resumed; /* set before start: the run resumes from a checkpoint */
  uint64_t restored_id; /* set by the kind's restore: the id it restored */
  uint64_t records_in, errors;
};

/* ---- calls a source makes into the core (server/source.c) ---- */

/* One record: a line without its newline, stamped time_ms. May push a full
 * batch. 0 ok, -1 OOM (logged). A source should check s->paused after each
 * read callback, and stop reading while it is set. */
int sl_source_emit(sl_source_t *s, const char *line, size_t n, double time_ms);
int sl_source_emit_fields(sl_source_t *s, const char *const *kv,
                          const size_t *lens, size_t npairs, double time_ms);
/* Pushes the pending batch now (call at the end of every read callback). */
void sl_source_flush(sl_source_t *s);
/* No more records (closing = 1: input ended; 0: stopped). Flushes. */
void sl_source_end(sl_source_t *s, int closing);
/* A rejected input (e.g. an oversized line): counted and logged. */
void sl_source_reject(sl_source_t *s, const char *why);
/* A fatal source error (Redis unreachable past its timeout): logged at
 * ERROR, and the pipeline fails with exit code 5. */
void sl_source_fail(sl_source_t *s, const char *why);

/* ---- calls a sink makes into the core (server/sink.c) ---- */

/* The sink can take batches again (clears k->busy). */
void sl_sink_ready(sl_sink_t *k);
/* A fatal sink error (e.g. cannot open its file): the pipeline fails. */
void sl_sink_fail(sl_sink_t *k, const char *why);
/* The same with the exit code to end with (5: Redis unreachable). */
void sl_sink_fail_code(sl_sink_t *k, int code, const char *why);

/* ---- the kinds (listed in kinds.c, the registry) ---- */
extern const sl_source_vt_t sl_source_file_vt;
extern const sl_source_vt_t sl_source_stdin_vt;
extern const sl_source_vt_t sl_source_tcp_vt;
extern const sl_source_vt_t sl_source_generator_vt;
extern const sl_source_vt_t sl_source_redis_vt;
extern const sl_sink_vt_t sl_sink_stdout_vt;
extern const sl_sink_vt_t sl_sink_file_vt;
extern const sl_sink_vt_t sl_sink_tcp_vt;
extern const sl_sink_vt_t sl_sink_redis_vt;
extern const sl_sink_vt_t sl_sink_null_vt;

/* Parses "HOST:PORT" (IPv4 or [IPv6]) into addr. 0 ok, -1 bad. */
int sl_endpoint_parse_addr(const char *hostport, struct sockaddr_storage *addr);

#endif
