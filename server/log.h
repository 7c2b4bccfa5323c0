/* log.h - one line per event on stderr: "TIME LEVEL component: message".
 *
 * Thread-safe (one write(2) per line). The level threshold is process-wide,
 * set once at start-up before threads exist.
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stddef.h>

typedef enum {
  SL_LOG_DEBUG = 0,
  SL_LOG_INFO = 1,
  SL_LOG_WARN = 2,
  SL_LOG_ERROR = 3
} sl_log_level_t;

void sl_log_set_level(int level);
void sl_log_set_json(int on); /* one JSON object per line */
/* The live status line (progress.c): remembered and written now; every log
 * line erases it, prints, and draws it again. NULL clears it. */
void sl_log_status(const char *line, size_t len);
int sl_log_level_from_name(const char *name); /* -1 if unknown */
void sl_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
