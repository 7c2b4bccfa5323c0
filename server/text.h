/* text.h - a growing text buffer for the admin API's answers: JSON string
 * literals and Prometheus label values escaped as each format wants.
 *
 * An sl_buf_t (codec.h) with text on top: it starts zeroed ({0}); every
 * append either succeeds or sets `oom` and turns the later appends into
 * no-ops, so a writer checks once at the end. The owner frees it with
 * sl_text_free. Any thread (one at a
 * time per buffer).
 */
#ifndef SL_TEXT_H
#define SL_TEXT_H

#include "codec.h"

#include <stddef.h>

typedef struct sl_text_s {
  sl_buf_t buf; /* the bytes; a NUL follows buf.len once anything was added */
  int oom;
} sl_text_t;

/* The text so far, NUL-terminated ("" before anything was added). */
static inline const char *sl_text_str(const sl_text_t *t) {
  return t->buf.data ? (const char *)t->buf.data : "";
}

void sl_text_add(sl_text_t *t, const char *data, size_t n);
void sl_text_printf(sl_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A JSON string literal of v[0..n) (quotes included). */
void sl_text_json(sl_text_t *t, const char *v, size_t n);
/* The same of a C string; `null` for NULL. */
void sl_text_jsonz(sl_text_t *t, const char *v);
/* A Prometheus label value (no quotes): \, " and newline escaped. */
void sl_text_label(sl_text_t *t, const char *v);
void sl_text_free(sl_text_t *t); /* t is {0} again */

#define SL_TEXT_LIT(t, lit) sl_text_add((t), (lit), sizeof(lit) - 1)

#endif
