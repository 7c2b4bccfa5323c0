/* test_redis_url.c - sl_redis_url_parse (redis_url.h): defaults, every
 * optional part, percent-escapes, IPv6 hosts, and junk refused with a reason
 * that never holds the password. Main thread only; needs no Redis.
 */
#include "check.h"
#include "redis_url.h"

static sl_redis_url_t ok(const char *url) {
  sl_redis_url_t u;
  const char *why = NULL;
  if (sl_redis_url_parse(url, &u, &why) != 0)
    CHECK_FAIL_("parse %s: %s", url, why ? why : "?");
  CHECK(why == NULL);
  return u;
}

static void bad(const char *url, const char *want) {
  sl_redis_url_t u;
  const char *why = NULL;
  if (sl_redis_url_parse(url, &u, &why) == 0)
    CHECK_FAIL_("parse %s: accepted", url);
  CHECK(why != NULL);
  if (!strstr(why, want))
    CHECK_FAIL_("parse %s: reason \"%s\", wanted \"%s\"", url, why, want);
  CHECK(!strstr(why, "s3cret"));
}

int main(void) {
  sl_redis_url_t u = ok("redis://localhost");
  CHECK_EQ_STR(u.host, "localhost");
  CHECK_EQ_INT(u.port, 6379);
  CHECK_EQ_INT(u.db, 0);
  CHECK_EQ_STR(u.password, "");
  CHECK_EQ_STR(u.prefix, "sluice");

  u = ok("redis://127.0.0.1:26399/3");
  CHECK_EQ_STR(u.host, "127.0.0.1");
  CHECK_EQ_INT(u.port, 26399);
  CHECK_EQ_INT(u.db, 3);

  u = ok("redis://:s3cret@redis.example:7000/15?prefix=wc");
  CHECK_EQ_STR(u.password, "s3cret");
  CHECK_EQ_STR(u.host, "redis.example");
  CHECK_EQ_INT(u.port, 7000);
  CHECK_EQ_INT(u.db, 15);
  CHECK_EQ_STR(u.prefix, "wc");

  u = ok("redis://h/");
  CHECK_EQ_INT(u.db, 0);
  CHECK_EQ_INT(u.port, 6379);
  u = ok("redis://h?prefix=a:b");
  CHECK_EQ_STR(u.prefix, "a:b");
  CHECK_EQ_INT(u.db, 0);
  u = ok("redis://h:1/0?prefix=p%2Fq");
  CHECK_EQ_STR(u.prefix, "p/q");
  CHECK_EQ_INT(u.port, 1);
  u = ok("redis://h:65535");
  CHECK_EQ_INT(u.port, 65535);

  /* escapes in the password: '@', '%', '/' */
  u = ok("redis://:a%40b%25c/d@h:6380");
  CHECK_EQ_STR(u.password, "a@b%c/d");
  CHECK_EQ_STR(u.host, "h");
  CHECK_EQ_INT(u.port, 6380);

  /* IPv6 in brackets, stored without them */
  u = ok("redis://[::1]:6390/2");
  CHECK_EQ_STR(u.host, "::1");
  CHECK_EQ_INT(u.port, 6390);
  CHECK_EQ_INT(u.db, 2);
  u = ok("redis://[fe80::1]");
  CHECK_EQ_STR(u.host, "fe80::1");
  CHECK_EQ_INT(u.port, 6379);

  /* junk */
  bad(NULL, "no URL");
  bad("", "not a redis://");
  bad("file:///tmp/x", "not a redis://");
  bad("http://h:1", "not a redis://");
  bad("rediss://h:1", "TLS");
  bad("redis://", "no host");
  bad("redis://:6379", "no host");
  bad("redis:///0", "no host");
  bad("redis://h:", "port");
  bad("redis://h:0", "port");
  bad("redis://h:65536", "port");
  bad("redis://h:12x", "port");
  bad("redis://h:-1", "port");
  bad("redis://h:1:2", "port");
  bad("redis://h/x", "db");
  bad("redis://h/-1", "db");
  bad("redis://h/1/2", "db");
  bad("redis://h/99999999999", "db");
  bad("redis://user:s3cret@h", "user names");
  bad("redis://:@h", "empty password");
  bad("redis://:s3cret%4@h", "escape");
  bad("redis://:s3cret%00@h", "escape");
  bad("redis://h?prefix=", "empty prefix");
  bad("redis://h?prefix=a%20b", "space");
  bad("redis://h?db=1", "query");
  bad("redis://h?prefix=a&x=1", "query");
  bad("redis://[::1", "unterminated");
  bad("redis://[::1]x", "junk after");
  bad("redis://[]:1", "no host");
  bad("redis://h st:1", "character in host");

  /* lengths */
  char url[700], big[300];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  snprintf(url, sizeof(url), "redis://%s", big);
  bad(url, "host too long");
  snprintf(url, sizeof(url), "redis://:%s@h", big);
  bad(url, "password too long");
  snprintf(url, sizeof(url), "redis://h?prefix=%.200s", big);
  bad(url, "prefix too long");
  snprintf(url, sizeof(url), "redis://h?prefix=%.127s", big);
  u = ok(url);
  CHECK_EQ_INT(strlen(u.prefix), 127);
  return CHECK_DONE();
}
