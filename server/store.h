/* store.h - where checkpoints are kept: a small interface with one
 * implementation per URL scheme (store_file.c: "file://DIR", the default;
 * store_memory.c: "memory:" for tests; Redis comes next with the same
 * interface).
 *
 * A store keeps complete checkpoint images (ckpt.h) by id and a `latest`
 * pointer. sl_store_commit writes the image durably FIRST and moves `latest`
 * LAST, so a crash at any instant leaves `latest` naming a complete image;
 * then it prunes all but the newest `keep` images. Calls block (file I/O,
 * fsync): the coordinator runs commit on a libuv work thread, and the reads
 * at start-up on the main thread. A store object is used by one thread at a
 * time.
 */
#ifndef SL_STORE_H
#define SL_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_store_s sl_store_t;

/* url: "file://ABSOLUTE_DIR" (the folder is created if missing) or
 * "memory:NAME" (process-wide, by NAME; for tests). keep >= 1. 0 ok; -1 with
 * *err (malloc'd, caller frees). */
int sl_store_open(const char *url, int keep, sl_store_t **out, char **err);
void sl_store_close(sl_store_t *s);

/* Stores image `id` durably, then points latest at it, then prunes. */
int sl_store_commit(sl_store_t *s, uint64_t id, const void *data, size_t len,
                    char **err);
/* The id latest points at, or 0 when there is none. A latest pointer that
 * is unreadable or garbage also gives 0 with *id = 0, but sets *err (caller
 * frees) and logs nothing: the caller falls back to sl_store_list. */
int sl_store_latest(sl_store_t *s, uint64_t *id, char **err);
/* Every stored id, newest first (*ids malloc'd; caller frees). */
int sl_store_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err);
/* Reads image `id` (*data malloc'd; caller frees). -1 if missing/unreadable. */
int sl_store_read(sl_store_t *s, uint64_t id, uint8_t **data, size_t *len,
                  char **err);

#endif
