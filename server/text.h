/* text.h - a growing text buffer for the admin API's answers: JSON string
 * literals and Prometheus label values escaped as each format wants.
 *
 * An sl_text_t starts zeroed ({0}); every append either succeeds or sets
 * `oom` and turns the later appends into no-ops, so a writer checks once at
 * the end. The owner frees `p` with sl_text_free. Any thread (one at a
 * time per buffer).
 */
#ifndef SL_TEXT_H
#define SL_TEXT_H

#include <stddef.h>

typedef struct sl_text_s {
  char *p; /* NUL-terminated once anything was appended; NULL before */
  size_t len, cap;
  int oom;
} sl_text_t;

void sl_text_add(sl_text_t *t, const char *data, size_t n);
void sl_text_printf(sl_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A JSON string literal of v[0..n) (quotes included). */
void sl_text_json(sl_text_t *t, const char *v, size_t n);
/* The same of a C string; `null` for NULL. */
void sl_text_jsonz(sl_text_t *t, const char *v);
/* A Prometheus label value (no quotes): \, " and newline escaped. */
void sl_text_label(sl_text_t *t, const char *v);
void sl_text_free(sl_text_t *t); /* frees p; t is {0} again */

#define SL_TEXT_LIT(t, lit) sl_text_add((t), (lit), sizeof(lit) - 1)

#endif
