/* check.h - a tiny test framework for the C unit tests (spec/c/test_*.c).
 *
 * CHECK(cond) counts a pass or prints FILE:LINE and exits 1 on failure;
 * CHECK_EQ_INT / CHECK_EQ_STR / CHECK_EQ_MEM print both sides. A test's main
 * ends with `return CHECK_DONE();`, which prints "N passed, 0 failed".
 * Single-threaded: call the macros from the main thread only.
 */
#ifndef SL_CHECK_H
#define SL_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long sl_check_passed;

#define CHECK_FAIL_(...)                                                       \
  do {                                                                         \
    fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);                    \
    fprintf(stderr, __VA_ARGS__);                                              \
    fprintf(stderr, "\n%ld passed, 1 failed\n", sl_check_passed);              \
    exit(1);                                                                   \
  } while (0)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond)                                                                  \
      sl_check_passed++;                                                       \
    else                                                                       \
      CHECK_FAIL_("%s", #cond);                                                \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ == b_)                                                              \
      sl_check_passed++;                                                       \
    else                                                                       \
      CHECK_FAIL_("%s == %s (%lld vs %lld)", #a, #b, a_, b_);                  \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    if (a_ && b_ && strcmp(a_, b_) == 0)                                       \
      sl_check_passed++;                                                       \
    else                                                                       \
      CHECK_FAIL_("%s == %s (\"%s\" vs \"%s\")", #a, #b, a_ ? a_ : "(null)",   \
                  b_ ? b_ : "(null)");                                         \
  } while (0)

#define CHECK_EQ_MEM(a, alen, b, blen)                                         \
  do {                                                                         \
    size_t al_ = (alen), bl_ = (blen);                                         \
    if (al_ == bl_ && (al_ == 0 || memcmp((a), (b), al_) == 0))                \
      sl_check_passed++;                                                       \
    else                                                                       \
      CHECK_FAIL_("%s == %s (%zu vs %zu bytes)", #a, #b, al_, bl_);            \
  } while (0)

#define CHECK_DONE() (printf("%ld passed, 0 failed\n", sl_check_passed), 0)

#endif
