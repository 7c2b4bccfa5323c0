/* redis_url.c - parses "redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P]"
 * into an sl_redis_url_t (see redis_url.h), for the Redis checkpoint store,
 * source and sink.
 *
 * Owns: nothing; pure function of its input. Threads: any.
 *
 * Rules:
 *   - the password runs from the ':' right after "redis://" to the first '@';
 *     '%XX' in it is decoded (write '@' as %40, '%' as %25); a user name
 *     ("USER:PASSWORD@", Redis 6 ACLs) is refused, since the struct has none;
 *   - HOST is a name, an IPv4 address, or an IPv6 address in brackets
 *     ("[::1]", stored without them); PORT is 1..65535 (default 6379);
 *   - DB is a decimal 0..1000000 (default 0); "HOST/" alone means db 0;
 *   - the only query parameter is prefix=P (default "sluice"): non-empty,
 *     '%XX' decoded, no spaces or control bytes after decoding;
 *   - "rediss://" (TLS) is refused: hiredis 0.14 is built without TLS.
 * On failure *why is a short static reason, never containing the password.
 */
#include "redis_url.h"

#include <string.h>

#define SL_URL_DB_MAX 1000000

static int sl_url_hex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static int sl_url_fail(const char **why, const char *reason) {
  if (why)
    *why = reason;
  return -1;
}

/* Percent-decodes s[0..len) into out (cap bytes, NUL-terminated). 0 ok;
 * -1 on a bad escape or %00 (*why), or when it does not fit (*why =
 * too_long). */
static int sl_url_decode(const char *s, size_t len, char *out, size_t cap,
                         const char *too_long, const char **why) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      int h = i + 2 < len ? sl_url_hex(s[i + 1]) : -1;
      int l = i + 2 < len ? sl_url_hex(s[i + 2]) : -1;
      if (h < 0 || l < 0 || (h | l) == 0)
        return sl_url_fail(why, "bad %-escape");
      c = h * 16 + l;
      i += 2;
    }
    if (n + 1 >= cap)
      return sl_url_fail(why, too_long);
    out[n++] = (char)c;
  }
  out[n] = 0;
  return 0;
}

/* Decimal digits s[0..len) as a value in [lo, hi]; -1 if not that. */
static long sl_url_number(const char *s, size_t len, long lo, long hi) {
  long v = 0;
  if (len == 0 || len > 10)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v < lo || v > hi ? -1 : v;
}

/* HOST[:PORT] in s[0..len). */
static int sl_url_hostport(const char *s, size_t len, sl_redis_url_t *out,
                           const char **why) {
  const char *host = s, *end = s + len, *colon;
  size_t hlen;
  if (len && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (!close)
      return sl_url_fail(why, "unterminated [IPv6] host");
    host = s + 1;
    hlen = (size_t)(close - host);
    colon = close + 1 < end ? close + 1 : NULL;
    if (colon && *colon != ':')
      return sl_url_fail(why, "junk after ]");
  } else {
    colon = memchr(s, ':', len);
    hlen = colon ? (size_t)(colon - s) : len;
  }
  if (hlen == 0)
    return sl_url_fail(why, "no host");
  if (hlen >= sizeof(out->host))
    return sl_url_fail(why, "host too long");
  for (size_t i = 0; i < hlen; i++) {
    unsigned char c = (unsigned char)host[i];
    if (c <= ' ' || c == 0x7f || c == '@' || c == '%' || c == '[' || c == ']')
      return sl_url_fail(why, "bad character in host");
  }
  memcpy(out->host, host, hlen);
  out->host[hlen] = 0;
  if (colon) {
    long p = sl_url_number(colon + 1, (size_t)(end - colon - 1), 1, 65535);
    if (p < 0)
      return sl_url_fail(why, "port must be 1..65535");
    out->port = (int)p;
  }
  return 0;
}

/* "?k=v&k=v" after the '?' (s[0..len)). */
static int sl_url_query(const char *s, size_t len, sl_redis_url_t *out,
                        const char **why) {
  const char *end = s + len;
  while (s < end) {
    const char *amp = memchr(s, '&', (size_t)(end - s));
    const char *stop = amp ? amp : end;
    size_t n = (size_t)(stop - s);
    if (n < 7 || strncmp(s, "prefix=", 7) != 0)
      return sl_url_fail(why, "unknown query parameter (only prefix=P)");
    if (sl_url_decode(s + 7, n - 7, out->prefix, sizeof(out->prefix),
                      "prefix too long", why) != 0)
      return -1;
    if (!out->prefix[0])
      return sl_url_fail(why, "empty prefix");
    for (const char *p = out->prefix; *p; p++)
      if ((unsigned char)*p <= ' ' || *p == 0x7f)
        return sl_url_fail(why, "space or control byte in prefix");
    s = amp ? amp + 1 : end;
  }
  return 0;
}

int sl_redis_url_parse(const char *url, sl_redis_url_t *out, const char **why) {
  memset(out, 0, sizeof(*out));
  out->port = 6379;
  out->db = 0;
  strcpy(out->prefix, "sluice");
  if (!url)
    return sl_url_fail(why, "no URL");
  if (strncmp(url, "rediss://", 9) == 0)
    return sl_url_fail(why, "rediss:// (TLS) is not supported");
  if (strncmp(url, "redis://", 8) != 0)
    return sl_url_fail(why, "not a redis:// URL");
  const char *s = url + 8, *end = s + strlen(s);

  /* [:PASSWORD@] */
  const char *at = memchr(s, '@', (size_t)(end - s));
  if (at) {
    if (s[0] != ':')
      return sl_url_fail(why, "user names are not supported (use "
                              "redis://:PASSWORD@HOST)");
    if (at == s + 1)
      return sl_url_fail(why, "empty password");
    if (sl_url_decode(s + 1, (size_t)(at - s - 1), out->password,
                      sizeof(out->password), "password too long", why) != 0)
      return -1;
    s = at + 1;
  }

  /* HOST[:PORT] up to '/' or '?' */
  const char *q = memchr(s, '?', (size_t)(end - s));
  const char *path_end = q ? q : end;
  const char *slash = memchr(s, '/', (size_t)(path_end - s));
  const char *auth_end = slash ? slash : path_end;
  if (sl_url_hostport(s, (size_t)(auth_end - s), out, why) != 0)
    return -1;

  /* [/DB] */
  if (slash && slash + 1 < path_end) {
    long db = sl_url_number(slash + 1, (size_t)(path_end - slash - 1), 0,
                            SL_URL_DB_MAX);
    if (db < 0)
      return sl_url_fail(why, "db must be a number 0..1000000");
    out->db = (int)db;
  }

  /* [?prefix=P] */
  if (q && sl_url_query(q + 1, (size_t)(end - q - 1), out, why) != 0)
    return -1;
  return 0;
}
