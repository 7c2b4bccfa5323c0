/* redis_url.h - "redis://[:PASSWORD@]HOST:PORT[/DB][?prefix=P]" parsed once,
 * shared by the Redis checkpoint store, source and sink. Any thread.
 */
#ifndef SL_REDIS_URL_H
#define SL_REDIS_URL_H

typedef struct sl_redis_url_s {
  char host[256];
  int port;           /* default 6379 */
  char password[256]; /* "" = none */
  int db;             /* default 0 */
  char prefix[128];   /* key prefix, default "sluice" */
} sl_redis_url_t;

/* 0 ok; -1 with a message in why (static) on a malformed URL. */
int sl_redis_url_parse(const char *url, sl_redis_url_t *out, const char **why);

#endif
