/* test_lines.c - unit tests of the line splitter (server/lines.c) and of
 * sl_endpoint_parse_addr (server/endpoint.c).
 *
 * Every input is fed in every chunking that matters: whole, byte by byte,
 * in chunks of every size, and split in two at every offset. The output is
 * the sequence of events, lines as "L:text" and rejections as "R:length",
 * joined by "|", compared with the expected string.
 */
#include "endpoint.h"
#include "lines.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (cond) {                                                                \
      passed++;                                                                \
    } else {                                                                   \
      failed++;                                                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)

/* ---- collecting events ---- */

typedef struct {
  char out[8192];
  size_t len;
  size_t max_cap; /* the largest buffer the splitter held */
  sl_lines_t *l;
} events_t;

static void put(events_t *e, const char *s, size_t n) {
  if (e->len + n + 1 >= sizeof e->out)
    n = 0; /* the test strings are small; a truncated result just fails */
  if (e->len > 0)
    e->out[e->len++] = '|';
  memcpy(e->out + e->len, s, n);
  e->len += n;
  e->out[e->len] = '\0';
}

static void on_line(void *ud, const char *line, size_t n) {
  char tmp[4096];
  events_t *e = ud;
  if (n + 2 > sizeof tmp)
    n = sizeof tmp - 2;
  tmp[0] = 'L';
  tmp[1] = ':';
  memcpy(tmp + 2, line, n);
  put(e, tmp, n + 2);
}

static void on_reject(void *ud, size_t n) {
  char tmp[32];
  int k = snprintf(tmp, sizeof tmp, "R:%zu", n);
  put(ud, tmp, (size_t)k);
}

/* Feeds in[0..n) as chunks of `step` bytes (the first chunk `first` bytes
 * when first > 0), then finishes; the events land in e->out. */
static void run_split(events_t *e, size_t max_line, const char *in, size_t n,
                      size_t first, size_t step) {
  sl_lines_t l;
  memset(e, 0, sizeof *e);
  sl_lines_init(&l, max_line, on_line, on_reject, e);
  size_t off = 0;
  while (off < n) {
    size_t c = off == 0 && first > 0 ? first : step;
    if (c > n - off)
      c = n - off;
    sl_lines_feed(&l, in + off, c);
    if (l.cap > e->max_cap)
      e->max_cap = l.cap;
    off += c;
  }
  sl_lines_finish(&l);
  sl_lines_free(&l);
}

/* Checks every chunking of `in` against `want` (one check per input). */
static void expect_split(size_t max_line, const char *in, const char *want) {
  size_t n = strlen(in), step, cut = 0;
  events_t e;
  int ok = 1;
  for (step = 1; step <= n + 1 && ok; step++) {
    run_split(&e, max_line, in, n, 0, step);
    ok = strcmp(e.out, want) == 0 && e.max_cap <= max_line + 1;
  }
  for (cut = 1; cut < n && ok; cut++) {
    run_split(&e, max_line, in, n, cut, n);
    ok = strcmp(e.out, want) == 0 && e.max_cap <= max_line + 1;
  }
  CHECK(ok, "max %zu, \"%s\" (chunks of %zu, cut %zu): got \"%s\" (buffer %zu)",
        max_line, in, step - 1, cut - 1, e.out, e.max_cap);
}

static void test_lines_basic(void) {
  expect_split(100, "", "");
  expect_split(100, "a\n", "L:a");
  expect_split(100, "a\nbc\ndef\n", "L:a|L:bc|L:def");
  expect_split(100, "hello world\nsecond line\n",
               "L:hello world|L:second line");
}

static void test_lines_empty_and_cr(void) {
  expect_split(100, "\n", "L:");
  expect_split(100, "\n\n\n", "L:|L:|L:");
  expect_split(100, "a\n\nb\n", "L:a|L:|L:b");
  expect_split(100, "a\r\nb\r\n", "L:a|L:b");
  expect_split(100, "\r\n\r\n", "L:|L:");
  expect_split(100, "a\rb\n", "L:a\rb"); /* only a trailing \r goes */
  expect_split(100, "a\r\r\n", "L:a\r"); /* and only one */
  expect_split(100, "x\r\ny\nz\r\n", "L:x|L:y|L:z");
}

static void test_lines_final_partial(void) {
  expect_split(100, "abc", "L:abc");
  expect_split(100, "a\nbc", "L:a|L:bc");
  expect_split(100, "a\nbc\r", "L:a|L:bc");
  expect_split(100, "a\n\r", "L:a|L:");
}

static void test_lines_max_line(void) {
  expect_split(5, "12345\n", "L:12345");
  expect_split(5, "12345\r\n", "L:12345");
  expect_split(5, "123456\n", "R:6");
  expect_split(5, "123456\r\n", "R:6");
  expect_split(5, "1234567890abc\nok\n", "R:13|L:ok");
  expect_split(5, "ok\n1234567890abc\r\nok2\n", "L:ok|R:13|L:ok2");
  expect_split(5, "123456789", "R:9"); /* oversized at EOF */
  expect_split(5, "123456789\r", "R:9");
  expect_split(5, "a\n123456\n\nb", "L:a|R:6|L:|L:b");
  expect_split(5, "aaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nccccc\n",
               "R:20|R:28|L:ccccc");
  expect_split(1, "a\nbb\nc\n", "L:a|R:2|L:c");
  expect_split(0, "\nx\n\n", "L:|R:1|L:");
}

/* A huge line never grows the buffer past max_line + 1. */
static void test_lines_bounded_buffer(void) {
  size_t n = 1 << 20;
  char *big = malloc(n + 8);
  if (!big) {
    CHECK(0, "out of memory");
    return;
  }
  memset(big, 'x', n);
  memcpy(big + n, "\nok\n", 5);
  events_t e;
  for (size_t step = 1000; step <= 64 * 1024; step *= 4) {
    run_split(&e, 100, big, n + 4, 0, step);
    CHECK(strcmp(e.out, "R:1048576|L:ok") == 0, "got %s", e.out);
    CHECK(e.max_cap <= 101, "buffer grew to %zu", e.max_cap);
  }
  run_split(&e, 2 << 20, big, n + 4, 0, 4096);
  CHECK(e.len > 2 && e.out[0] == 'L' && strcmp(e.out + e.len - 5, "|L:ok") == 0,
        "a 1 MiB line under a 2 MiB max is delivered");
  free(big);
}

/* The splitter can be reset and reused after finish. */
static void test_lines_reuse(void) {
  events_t e;
  sl_lines_t l;
  memset(&e, 0, sizeof e);
  sl_lines_init(&l, 10, on_line, on_reject, &e);
  sl_lines_feed(&l, "abc", 3);
  sl_lines_reset(&l);
  sl_lines_feed(&l, "def\ngh", 6);
  sl_lines_finish(&l);
  sl_lines_feed(&l, "ij\n", 3);
  sl_lines_finish(&l);
  sl_lines_free(&l);
  CHECK(strcmp(e.out, "L:def|L:gh|L:ij") == 0, "got %s", e.out);
}

/* ---- sl_endpoint_parse_addr ---- */

static void expect_v4(const char *s, const char *ip, int port) {
  struct sockaddr_storage ss;
  char got[64] = "";
  int rc = sl_endpoint_parse_addr(s, &ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  if (rc == 0 && ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &in->sin_addr, got, sizeof got);
  CHECK(rc == 0 && ss.ss_family == AF_INET && strcmp(got, ip) == 0 &&
            ntohs(in->sin_port) == port,
        "\"%s\" -> rc %d %s:%d, want %s:%d", s, rc, got,
        rc == 0 ? ntohs(in->sin_port) : -1, ip, port);
}

static void expect_v6(const char *s, const char *ip, int port) {
  struct sockaddr_storage ss;
  char got[64] = "";
  int rc = sl_endpoint_parse_addr(s, &ss);
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (rc == 0 && ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &in6->sin6_addr, got, sizeof got);
  CHECK(rc == 0 && ss.ss_family == AF_INET6 && strcmp(got, ip) == 0 &&
            ntohs(in6->sin6_port) == port,
        "\"%s\" -> rc %d %s, want [%s]:%d", s, rc, got, ip, port);
}

static void expect_bad(const char *s) {
  struct sockaddr_storage ss;
  CHECK(sl_endpoint_parse_addr(s, &ss) == -1, "\"%s\" should be rejected",
        s ? s : "(null)");
}

static void test_parse_addr(void) {
  expect_v4("127.0.0.1:9000", "127.0.0.1", 9000);
  expect_v4("0.0.0.0:80", "0.0.0.0", 80);
  expect_v4("localhost:9000", "127.0.0.1", 9000);
  expect_v4("LocalHost:1", "127.0.0.1", 1);
  expect_v4("10.1.2.3:65535", "10.1.2.3", 65535);
  expect_v4("127.0.0.1:0", "127.0.0.1", 0); /* any free port */
  expect_v6("[::1]:9000", "::1", 9000);
  expect_v6("[::]:7000", "::", 7000);
  expect_v6("[fe80::1:2]:1234", "fe80::1:2", 1234);
  expect_bad(NULL);
  expect_bad("");
  expect_bad("127.0.0.1");
  expect_bad("127.0.0.1:");
  expect_bad(":9000");
  expect_bad("127.0.0.1:65536");
  expect_bad("127.0.0.1:99999999");
  expect_bad("127.0.0.1:90x");
  expect_bad("127.0.0.1:-1");
  expect_bad("127.0.0.1: 80");
  expect_bad("127.0.0:80");
  expect_bad("256.0.0.1:80");
  expect_bad("example.com:80"); /* no DNS */
  expect_bad("::1:9000");       /* IPv6 needs brackets */
  expect_bad("[::1]9000");
  expect_bad("[::1]:");
  expect_bad("[::1:9000");
  expect_bad("[]:9000");
  expect_bad("[127.0.0.1]:80");
  expect_bad("1.2.3.4:80:81");
}

int main(void) {
  test_lines_basic();
  test_lines_empty_and_cr();
  test_lines_final_partial();
  test_lines_max_line();
  test_lines_bounded_buffer();
  test_lines_reuse();
  test_parse_addr();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
