/* text.c - the admin API's text buffer (see text.h).
 *
 * Owns only each buffer's block, grown by sl_buf_reserve (codec.c).
 */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_text_add(sl_text_t *s, const char *data, size_t n) {
  if (s->oom)
    return;
  if (sl_buf_reserve(&s->buf, n + 1) < 0) { /* + the NUL */
    s->oom = 1;
    return;
  }
  memcpy(s->buf.data + s->buf.len, data, n);
  s->buf.len += n;
  s->buf.data[s->buf.len] = 0;
}

void sl_text_printf(sl_text_t *s, const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof small) {
    sl_text_add(s, small, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (!big) {
    s->oom = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sl_text_add(s, big, (size_t)n);
  free(big);
}

/* A JSON string literal. */
void sl_text_json(sl_text_t *s, const char *v, size_t n) {
  SL_TEXT_LIT(s, "\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch == '"' || ch == '\\') {
      char e[2] = {'\\', (char)ch};
      sl_text_add(s, e, 2);
    } else if (ch < 0x20 || ch == 0x7f) {
      sl_text_printf(s, "\\u%04x", ch);
    } else {
      sl_text_add(s, (const char *)&ch, 1);
    }
  }
  SL_TEXT_LIT(s, "\"");
}

void sl_text_jsonz(sl_text_t *s, const char *v) {
  if (v)
    sl_text_json(s, v, strlen(v));
  else
    SL_TEXT_LIT(s, "null");
}

/* A Prometheus label value: backslash, quote and newline escaped. */
void sl_text_label(sl_text_t *s, const char *v) {
  for (; v && *v; v++) {
    if (*v == '\\' || *v == '"')
      sl_text_printf(s, "\\%c", *v);
    else if (*v == '\n')
      SL_TEXT_LIT(s, "\\n");
    else
      sl_text_add(s, v, 1);
  }
}

void sl_text_free(sl_text_t *t) {
  sl_buf_free(&t->buf);
  t->oom = 0;
}
