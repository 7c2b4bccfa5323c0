/* log.h - one line per event on stderr: "TIME LEVEL component: message".
 *
 * Thread-safe (one write(2) per line). The level threshold is process-wide,
 * set once at start-up before threads exist. WARN and ERROR events are also
 * remembered (the last 16) and counted, for the admin API.
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
const char *sl_log_level_name(int level);     /* "debug" .. "error" */

/* The last SL_LOG_RECENT WARN and ERROR events, kept whatever the level
 * threshold (GET /status shows them), and how many there were. */
#define SL_LOG_RECENT 16
typedef struct sl_log_entry_s {
  double time_ms; /* Unix time, ms */
  int level;
  char component[32];
  char msg[480]; /* truncated */
} sl_log_entry_t;
/* Any thread: copies up to `max` of them, oldest first; returns how many. */
int sl_log_recent(sl_log_entry_t *out, int max);
/* Any thread: WARN or ERROR events so far in this process. */
unsigned long long sl_log_count(int level);
void sl_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
