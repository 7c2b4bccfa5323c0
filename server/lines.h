/* lines.h - a line splitter for byte streams (file, stdin and tcp sources).
 *
 * Fed arbitrary chunks, it calls on_line once per complete line, without its
 * "\n" and without one trailing "\r". A line longer than max_line bytes (not
 * counting "\n" and the trailing "\r") is not delivered: on_reject gets its
 * length once its end is seen, and its bytes are discarded as they arrive,
 * never buffered. sl_lines_finish delivers a last line that had no "\n".
 *
 * Lines that lie whole inside a chunk are passed as pointers into the chunk:
 * no copy, no allocation per line. Only the partial tail of a chunk is
 * copied, into a buffer that never grows past max_line + 1 bytes.
 *
 * The splitter also counts bytes: `fed` (all bytes fed) and `consumed` (the
 * bytes of every line that was delivered, rejected or dropped, with its
 * "\n"), so a replayable source knows how many bytes of its input are still
 * pending in an unfinished line (sl_lines_pending). `consumed` is advanced
 * before on_line is called.
 *
 * Single-threaded: one splitter per stream, used by the thread reading it.
 */
#ifndef SL_LINES_H
#define SL_LINES_H

#include <stddef.h>

/* A line; `line` is valid only during the call. */
typedef void (*sl_lines_line_cb)(void *ud, const char *line, size_t n);
/* An oversized line of n bytes was discarded. */
typedef void (*sl_lines_reject_cb)(void *ud, size_t n);

typedef struct sl_lines_s {
  char *buf; /* the partial line carried over between chunks */
  size_t len, cap;
  size_t max_line;
  size_t skipped; /* bytes of the line being discarded */
  int skipping;   /* discarding up to the next "\n" */
  int oom;        /* the line being discarded was dropped for lack of memory */
  char last;      /* last byte discarded (a trailing "\r" is not counted) */
  unsigned long long fed;      /* bytes fed so far */
  unsigned long long consumed; /* bytes of the lines finished so far */
  sl_lines_line_cb on_line;
  sl_lines_reject_cb on_reject;
  void *ud;
} sl_lines_t;

/* The default max_line of the sources (1 MiB). */
#define SL_LINES_DEFAULT_MAX ((size_t)1 << 20)

void sl_lines_init(sl_lines_t *l, size_t max_line, sl_lines_line_cb on_line,
                   sl_lines_reject_cb on_reject, void *ud);
/* Splits n more bytes. 0 ok; -1 when a partial line could not be buffered
 * (out of memory): that line is dropped, without on_reject, and splitting
 * carries on at the next "\n". */
int sl_lines_feed(sl_lines_t *l, const char *p, size_t n);
/* End of input: delivers (or rejects) a last line left without "\n". The
 * splitter is then empty and may be fed again. */
void sl_lines_finish(sl_lines_t *l);
/* Forgets a partial line without delivering it (e.g. after a reset). */
void sl_lines_reset(sl_lines_t *l);
/* Bytes fed that belong to no finished line yet: the partial line carried
 * over, or the part seen so far of a line being discarded. */
unsigned long long sl_lines_pending(const sl_lines_t *l);
void sl_lines_free(sl_lines_t *l);

#endif
