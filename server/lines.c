/* lines.c - the line splitter of the byte-stream sources (see lines.h).
 *
 * Runs on whichever thread feeds it; in the server that is the I/O thread
 * (file, stdin and tcp sources). Owns only the buffer of the partial tail.
 *
 * A line is first looked for inside the chunk: when nothing is carried over,
 * a complete line is handed out in place. Otherwise the carried bytes and the
 * head of the chunk are joined in the buffer. The buffer may hold max_line + 1
 * bytes, so that a line of exactly max_line bytes followed by "\r\n" still
 * fits; one byte more and the line is oversized for sure, so its bytes are
 * only counted from then on (`skipping`) until its "\n".
 */
#include "lines.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LINES_MIN_CAP 256
#define LINES_KEEP_CAP (64 * 1024) /* a bigger buffer is freed once empty */

void sl_lines_init(sl_lines_t *l, size_t max_line, sl_lines_line_cb on_line,
                   sl_lines_reject_cb on_reject, void *ud) {
  memset(l, 0, sizeof *l);
  l->max_line = max_line > SIZE_MAX / 2 ? SIZE_MAX / 2 : max_line;
  l->on_line = on_line;
  l->on_reject = on_reject;
  l->ud = ud;
}

void sl_lines_free(sl_lines_t *l) {
  free(l->buf);
  l->buf = NULL;
  l->len = l->cap = 0;
}

/* Delivers or rejects one whole line (its "\n" already removed). */
static void lines_emit(sl_lines_t *l, const char *p, size_t n) {
  if (n > 0 && p[n - 1] == '\r')
    n--;
  if (n > l->max_line) {
    if (l->on_reject)
      l->on_reject(l->ud, n);
  } else {
    l->on_line(l->ud, p, n);
  }
}

/* The carried-over line is complete: forget it, and give back a big buffer. */
static void lines_clear(sl_lines_t *l) {
  l->len = 0;
  if (l->cap > LINES_KEEP_CAP)
    sl_lines_free(l);
}

/* Starts discarding the current line; `seen` bytes of it so far. */
static void lines_skip_start(sl_lines_t *l, size_t seen, char last, int oom) {
  l->skipping = 1;
  l->skipped = seen;
  l->last = last;
  l->oom = oom;
  lines_clear(l);
}

static void lines_skip_more(sl_lines_t *l, const char *p, size_t n) {
  l->skipped += n;
  if (n > 0)
    l->last = p[n - 1];
}

/* The discarded line ended: report its length (without a trailing "\r"). */
static void lines_skip_end(sl_lines_t *l) {
  size_t n = l->skipped - (l->skipped > 0 && l->last == '\r');
  l->skipping = 0;
  if (!l->oom && l->on_reject)
    l->on_reject(l->ud, n);
  l->oom = 0;
}

/* Room for `need` bytes in all; need <= max_line + 1. 0 ok, -1 OOM. */
static int lines_reserve(sl_lines_t *l, size_t need) {
  if (need <= l->cap)
    return 0;
  size_t cap = l->cap ? l->cap * 2 : LINES_MIN_CAP;
  if (cap < need)
    cap = need;
  if (cap > l->max_line + 1)
    cap = l->max_line + 1;
  char *b = realloc(l->buf, cap);
  if (!b)
    return -1;
  l->buf = b;
  l->cap = cap;
  return 0;
}

/* The end of a line arrived (p[0..n) precedes its "\n"). 0 ok, -1 OOM. */
static int lines_complete(sl_lines_t *l, const char *p, size_t n) {
  if (l->len == 0) {
    lines_emit(l, p, n);
    return 0;
  }
  size_t total = l->len + n;
  if (total > l->max_line + 1) {
    char last = n > 0 ? p[n - 1] : l->buf[l->len - 1];
    lines_skip_start(l, total, last, 0);
    lines_skip_end(l);
    return 0;
  }
  if (lines_reserve(l, total) < 0) {
    lines_skip_start(l, total, 0, 1);
    lines_skip_end(l);
    return -1;
  }
  memcpy(l->buf + l->len, p, n);
  lines_emit(l, l->buf, total);
  lines_clear(l);
  return 0;
}

/* The chunk ended inside a line: carry p[0..n) over. 0 ok, -1 OOM. */
static int lines_carry(sl_lines_t *l, const char *p, size_t n) {
  size_t total = l->len + n;
  if (total > l->max_line + 1) {
    char last = n > 0 ? p[n - 1] : l->buf[l->len - 1];
    lines_skip_start(l, total, last, 0);
    return 0;
  }
  if (lines_reserve(l, total) < 0) {
    lines_skip_start(l, total, 0, 1);
    return -1;
  }
  memcpy(l->buf + l->len, p, n);
  l->len = total;
  return 0;
}

int sl_lines_feed(sl_lines_t *l, const char *p, size_t n) {
  int rc = 0;
  const char *start = p;
  unsigned long long base = l->fed;
  l->fed += n;
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t seg = nl ? (size_t)(nl - p) : n;
    if (nl)
      l->consumed = base + (unsigned long long)(nl - start) + 1;
    if (l->skipping) {
      lines_skip_more(l, p, seg);
      if (nl)
        lines_skip_end(l);
    } else if (nl ? lines_complete(l, p, seg) : lines_carry(l, p, seg)) {
      rc = -1;
    }
    if (!nl)
      break;
    p += seg + 1;
    n -= seg + 1;
  }
  return rc;
}

void sl_lines_finish(sl_lines_t *l) {
  l->consumed = l->fed;
  if (l->skipping) {
    lines_skip_end(l);
  } else if (l->len > 0) {
    lines_emit(l, l->buf, l->len);
    lines_clear(l);
  }
}

void sl_lines_reset(sl_lines_t *l) {
  l->consumed = l->fed;
  l->skipping = 0;
  l->oom = 0;
  lines_clear(l);
}

unsigned long long sl_lines_pending(const sl_lines_t *l) {
  return l->fed - l->consumed;
}
