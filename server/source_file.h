/* source_file.h - the file source's reader, shared with the stdin source.
 *
 * An sl_fsrc_t reads one file descriptor with uv_fs_read in 64 KiB chunks,
 * splits it into lines and emits them for its source. The file source wraps
 * one around the file it opens; the stdin source wraps one around fd 0 when
 * stdin is a regular file (a redirect), where uv_pipe/uv_tty cannot be used.
 * I/O thread only.
 */
#ifndef SL_SOURCE_FILE_H
#define SL_SOURCE_FILE_H

#include "endpoint.h"

typedef struct sl_fsrc_s sl_fsrc_t;

/* Starts reading fd from `offset` (-1: from its current position, without
 * seeking: what stdin needs). `name` names the input in log lines (copied).
 * own_fd: close fd when closing. follow: at EOF, poll for appended data
 * instead of ending. NULL after an ERROR log on failure. */
sl_fsrc_t *sl_fsrc_start(sl_source_t *s, uv_file fd, int own_fd, int64_t offset,
                         int follow, const char *name);
void sl_fsrc_resume(sl_fsrc_t *f);
/* Byte offset of the first byte of the next line not yet handed to
 * sl_source_emit; -1 for a reader started at offset -1 (stdin). */
int64_t sl_fsrc_offset(const sl_fsrc_t *f);
/* Bytes of the file past that offset now (fstat); -1 when not known. */
int64_t sl_fsrc_lag(const sl_fsrc_t *f);
/* The arithmetic of sl_fsrc_offset: the position of the next read minus the
 * bytes of the unfinished line held by the splitter. */
int64_t sl_fsrc_next_offset(int64_t read_pos, uint64_t pending);
void sl_fsrc_stop(sl_fsrc_t *f);
/* Closes handles, frees f (once no read is in flight), then done(s). */
void sl_fsrc_close(sl_fsrc_t *f, sl_source_cb done);

#endif
