/* log.c - one line per event on stderr (see log.h), and the wall clock.
 *
 * Owns the process-wide level threshold (written once at start-up, read by
 * every thread). Any thread may log: each line is formatted on the caller's
 * stack and written to fd 2 with a single write(2), so lines from different
 * threads never interleave. Format:
 *   2026-11-24T11:30:00.123Z INFO component: message
 * Messages are truncated to fit SL_LOG_LINE_MAX bytes; CR and LF inside a
 * message become spaces so that one event is one line. With --log-format
 * json each line is one JSON object: time, level, component, msg.
 *
 * Also owns the ring of the last SL_LOG_RECENT WARN/ERROR events and their
 * counts (GET /status, /metrics), guarded by sl_recent_mu.
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, gmtime_r */
#endif
#include "log.h"
#include "luaapi.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SL_LOG_LINE_MAX 4096

static int sl_log_threshold = SL_LOG_INFO;
static int sl_log_json; /* written once at start-up, like the threshold */

static const char *const sl_log_names[] = {"debug", "info", "warn", "error"};
static const char *const sl_log_tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};

static int sl_log_clamp(int level) {
  if (level < SL_LOG_DEBUG)
    return SL_LOG_DEBUG;
  return level > SL_LOG_ERROR ? SL_LOG_ERROR : level;
}

void sl_log_set_level(int level) {
  sl_log_threshold = sl_log_clamp(level);
}

void sl_log_set_json(int on) {
  sl_log_json = on;
}

static int sl_log_timestamp(char *dst, size_t cap);
static void sl_log_write(const char *p, size_t n);

/* Appends s to line[*n..cap) as the inside of a JSON string. */
static void sl_log_json_str(char *line, size_t *n, size_t cap, const char *s) {
  for (; *s && *n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      line[(*n)++] = '\\';
      line[(*n)++] = (char)c;
    } else if (c < 0x20) {
      *n += (size_t)snprintf(line + *n, cap - *n, "\\u%04x", c);
    } else {
      line[(*n)++] = (char)c;
    }
  }
}

/* {"time":"...","level":"info","component":"...","msg":"..."} */
static void sl_log_json_line(int level, const char *component,
                             const char *msg) {
  char line[SL_LOG_LINE_MAX + 512];
  size_t cap = sizeof(line) - 3, n = 0;
  n += (size_t)snprintf(line, cap, "{\"time\":\"");
  n += (size_t)sl_log_timestamp(line + n, cap - n);
  n += (size_t)snprintf(line + n, cap - n,
                        "\",\"level\":\"%s\",\"component\":\"",
                        sl_log_names[sl_log_clamp(level)]);
  sl_log_json_str(line, &n, cap, component ? component : "-");
  n += (size_t)snprintf(line + n, cap - n, "\",\"msg\":\"");
  sl_log_json_str(line, &n, cap, msg);
  line[n++] = '"';
  line[n++] = '}';
  line[n++] = '\n';
  sl_log_write(line, n);
}

int sl_log_level_from_name(const char *name) {
  if (!name)
    return -1;
  for (int i = SL_LOG_DEBUG; i <= SL_LOG_ERROR; i++)
    if (strcmp(name, sl_log_names[i]) == 0)
      return i;
  return -1;
}

double sl_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" into dst (>= 32 bytes); returns length. */
static int sl_log_timestamp(char *dst, size_t cap) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  return snprintf(dst, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

/* The status line (progress.c), guarded by sl_status_mu: any thread logs. */
static pthread_mutex_t sl_status_mu = PTHREAD_MUTEX_INITIALIZER;
static char sl_status[256];
static size_t sl_status_len;

static void sl_log_write_raw(const char *p, size_t n);

void sl_log_status(const char *line, size_t len) {
  pthread_mutex_lock(&sl_status_mu);
  if (!line) {
    if (sl_status_len)
      sl_log_write_raw("\r\033[K", 4);
    sl_status_len = 0;
  } else {
    if (len > sizeof sl_status)
      len = sizeof sl_status;
    memcpy(sl_status, line, len);
    sl_status_len = len;
    sl_log_write_raw(line, len);
  }
  pthread_mutex_unlock(&sl_status_mu);
}

/* A log line: with a status line showing, erase it, print, redraw it. */
static void sl_log_write(const char *p, size_t n) {
  pthread_mutex_lock(&sl_status_mu);
  if (!sl_status_len) {
    pthread_mutex_unlock(&sl_status_mu);
    sl_log_write_raw(p, n);
    return;
  }
  char buf[SL_LOG_LINE_MAX + 1024];
  size_t k = 0;
  memcpy(buf, "\r\033[K", 4);
  k = 4;
  if (n > sizeof buf - k - sl_status_len)
    n = sizeof buf - k - sl_status_len;
  memcpy(buf + k, p, n);
  k += n;
  memcpy(buf + k, sl_status, sl_status_len);
  k += sl_status_len;
  sl_log_write_raw(buf, k);
  pthread_mutex_unlock(&sl_status_mu);
}

static void sl_log_write_raw(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(2, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

/* ---- the recent WARN and ERROR events (sl_recent_mu) ---- */

static pthread_mutex_t sl_recent_mu = PTHREAD_MUTEX_INITIALIZER;
static sl_log_entry_t sl_recent[SL_LOG_RECENT];
static unsigned long long sl_recent_n;  /* events remembered so far */
static unsigned long long sl_counts[2]; /* WARN, ERROR */

/* Copies s into dst[cap], truncated, NUL-terminated. */
static void sl_log_copy(char *dst, size_t cap, const char *s) {
  size_t n = strlen(s);
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, s, n);
  dst[n] = 0;
}

static void sl_log_remember(int level, const char *component, const char *msg) {
  pthread_mutex_lock(&sl_recent_mu);
  sl_log_entry_t *e = &sl_recent[sl_recent_n++ % SL_LOG_RECENT];
  e->time_ms = sl_now_ms();
  e->level = level;
  sl_log_copy(e->component, sizeof e->component, component ? component : "-");
  sl_log_copy(e->msg, sizeof e->msg, msg);
  sl_counts[level >= SL_LOG_ERROR]++;
  pthread_mutex_unlock(&sl_recent_mu);
}

int sl_log_recent(sl_log_entry_t *out, int max) {
  pthread_mutex_lock(&sl_recent_mu);
  unsigned long long n =
      sl_recent_n < SL_LOG_RECENT ? sl_recent_n : SL_LOG_RECENT;
  if (max < 0)
    max = 0;
  if (n > (unsigned long long)max)
    n = (unsigned long long)max;
  for (unsigned long long i = 0; i < n; i++)
    out[i] = sl_recent[(sl_recent_n - n + i) % SL_LOG_RECENT];
  pthread_mutex_unlock(&sl_recent_mu);
  return (int)n;
}

unsigned long long sl_log_count(int level) {
  if (level < SL_LOG_WARN)
    return 0;
  pthread_mutex_lock(&sl_recent_mu);
  unsigned long long n = sl_counts[level >= SL_LOG_ERROR];
  pthread_mutex_unlock(&sl_recent_mu);
  return n;
}

const char *sl_log_level_name(int level) {
  return sl_log_names[sl_log_clamp(level)];
}

/* "TIME LEVEL component: message\n", CR and LF in the message as spaces. */
static void sl_log_text_line(int level, const char *component,
                             const char *msg) {
  char line[SL_LOG_LINE_MAX];
  size_t cap = sizeof(line) - 1; /* room for the newline */
  int n = sl_log_timestamp(line, cap);
  n += snprintf(line + n, cap - (size_t)n,
                " %s %s: ", sl_log_tags[sl_log_clamp(level)],
                component ? component : "-");
  if ((size_t)n >= cap)
    n = (int)cap - 1;
  size_t start = (size_t)n;
  int m = snprintf(line + n, cap - (size_t)n, "%s", msg);
  size_t len = m < 0 ? start : start + (size_t)m;
  if (len >= cap)
    len = cap - 1;
  for (size_t i = start; i < len; i++)
    if (line[i] == '\n' || line[i] == '\r')
      line[i] = ' ';
  line[len++] = '\n';
  sl_log_write(line, len);
}

void sl_log(int level, const char *component, const char *fmt, ...) {
  if (level < sl_log_threshold && level < SL_LOG_WARN)
    return;
  char msg[SL_LOG_LINE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (level >= SL_LOG_WARN)
    sl_log_remember(level, component, msg);
  if (level < sl_log_threshold)
    return;
  if (sl_log_json)
    sl_log_json_line(level, component, msg);
  else
    sl_log_text_line(level, component, msg);
}
