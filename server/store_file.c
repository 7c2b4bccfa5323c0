/* store_file.c - the "file://DIR" checkpoint store (see store.h), the
 * embedded default.
 *
 * Owns: the folder DIR and every file in it:
 *   DIR/chk-<id, 20-digit zero-padded>.ckpt   one complete image each
 *   DIR/latest                                "<id>\n", written last
 *   DIR/.chk-<id>.tmp, DIR/.latest.tmp         in-flight writes (ignored)
 * Threads: one at a time (a libuv work thread commits; the main thread reads
 * at start-up).
 *
 * Commit: the image goes to a temp file, is fsync'd, renamed into place and
 * the folder fsync'd; only then is `latest` replaced the same way. A crash
 * at any instant leaves `latest` naming a complete image (or a stale or
 * missing `latest`, which the caller survives with sl_store_list). Then all
 * images but the newest `keep` are deleted, never the one latest names; a
 * failed delete is logged and does not fail the commit, which is durable by
 * then.
 *
 * latest: a missing DIR/latest is "none" (0). An unreadable or garbage one
 * returns 0 with *id = 0 and *err saying why, and logs nothing: the caller
 * falls back to the newest image in sl_store_list.
 */
#include "log.h"
#include "store_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SL_FILE_LATEST_MAX 64 /* longest `latest` file we accept */

typedef struct {
  sl_store_t base;
  char *dir; /* absolute, no trailing slash (except "/") */
} sl_store_file_t;

static const sl_store_vt_t sl_store_file_vt;

/* ---- paths ----------------------------------------------------------------
 */

/* malloc'd "DIR/<name>", or NULL (OOM). */
static char *sl_file_path(const sl_store_file_t *f, const char *name) {
  char *p = NULL;
  const char *sep = strcmp(f->dir, "/") == 0 ? "" : "/";
  if (asprintf(&p, "%s%s%s", f->dir, sep, name) < 0)
    return NULL;
  return p;
}

static char *sl_file_image(const sl_store_file_t *f, uint64_t id, int tmp) {
  char name[64];
  snprintf(name, sizeof(name),
           tmp ? ".chk-%020" PRIu64 ".tmp" : "chk-%020" PRIu64 ".ckpt", id);
  return sl_file_path(f, name);
}

static int sl_file_oom(char **err) {
  return sl_store_errf(err, "checkpoint store: out of memory");
}

/* ---- open -----------------------------------------------------------------
 */

/* mkdir -p on a writable copy of an absolute path. */
static int sl_file_mkdirs(char *path, char **err) {
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != 0)
      continue;
    char c = *p;
    *p = 0;
    int rc = mkdir(path, 0755);
    if (rc != 0 && errno != EEXIST) {
      int e = errno;
      sl_store_errf(err, "cannot create %s: %s", path, strerror(e));
      *p = c;
      return -1;
    }
    *p = c;
    if (c == 0)
      return 0;
  }
}

static int sl_file_check_dir(const char *dir, char **err) {
  struct stat st;
  if (stat(dir, &st) != 0)
    return sl_store_errf(err, "cannot stat %s: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return sl_store_errf(err, "checkpoint store %s: not a directory", dir);
  return 0;
}

int sl_store_file_open(const char *where, int keep, sl_store_t **out,
                       char **err) {
  if (where[0] != '/')
    return sl_store_errf(err,
                         "checkpoint store file://%s: needs an absolute "
                         "path (file:///DIR)",
                         where);
  sl_store_file_t *f = calloc(1, sizeof(*f));
  if (!f || !(f->dir = strdup(where))) {
    free(f);
    return sl_file_oom(err);
  }
  size_t n = strlen(f->dir);
  while (n > 1 && f->dir[n - 1] == '/')
    f->dir[--n] = 0;
  if (sl_file_mkdirs(f->dir, err) != 0 || sl_file_check_dir(f->dir, err)) {
    free(f->dir);
    free(f);
    return -1;
  }
  f->base.vt = &sl_store_file_vt;
  f->base.keep = keep;
  *out = &f->base;
  return 0;
}

static void sl_file_close(sl_store_t *s) {
  sl_store_file_t *f = (sl_store_file_t *)s;
  free(f->dir);
  free(f);
}

/* ---- durable writes --------------------------------------------------------
 */

static int sl_file_write_all(int fd, const uint8_t *p, size_t len) {
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Writes and fsyncs `path` (a temp file; removed on failure). */
static int sl_file_write_synced(const char *path, const void *data, size_t len,
                                char **err) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return sl_store_errf(err, "cannot create %s: %s", path, strerror(errno));
  const char *what = "write";
  int rc = sl_file_write_all(fd, data, len);
  if (rc == 0) {
    what = "fsync";
    rc = fsync(fd);
  }
  int e = errno;
  if (close(fd) != 0 && rc == 0) {
    what = "close";
    e = errno;
    rc = -1;
  }
  if (rc != 0) {
    unlink(path);
    return sl_store_errf(err, "cannot %s %s: %s", what, path, strerror(e));
  }
  return 0;
}

static int sl_file_sync_dir(const sl_store_file_t *f, char **err) {
  int fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return sl_store_errf(err, "cannot open %s: %s", f->dir, strerror(errno));
  int rc = fsync(fd), e = errno;
  close(fd);
  if (rc != 0 && e != EINVAL) /* some filesystems cannot fsync a folder */
    return sl_store_errf(err, "cannot fsync %s: %s", f->dir, strerror(e));
  return 0;
}

/* tmp -> final, durably. Frees neither path. */
static int sl_file_publish(const sl_store_file_t *f, const char *tmp,
                           const char *final, const void *data, size_t len,
                           char **err) {
  if (sl_file_write_synced(tmp, data, len, err) != 0)
    return -1;
  if (rename(tmp, final) != 0) {
    int e = errno;
    unlink(tmp);
    return sl_store_errf(err, "cannot rename %s to %s: %s", tmp, final,
                         strerror(e));
  }
  return sl_file_sync_dir(f, err);
}

static int sl_file_commit_image(sl_store_file_t *f, uint64_t id,
                                const void *data, size_t len, char **err) {
  char *tmp = sl_file_image(f, id, 1), *final = sl_file_image(f, id, 0);
  int rc = tmp && final ? sl_file_publish(f, tmp, final, data, len, err)
                        : sl_file_oom(err);
  free(tmp);
  free(final);
  return rc;
}

static int sl_file_commit_latest(sl_store_file_t *f, uint64_t id, char **err) {
  char text[32];
  int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", id);
  char *tmp = sl_file_path(f, ".latest.tmp"),
       *final = sl_file_path(f, "latest");
  int rc = tmp && final ? sl_file_publish(f, tmp, final, text, (size_t)n, err)
                        : sl_file_oom(err);
  free(tmp);
  free(final);
  return rc;
}

static int sl_file_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err);

/* Deletes images beyond the newest `keep`, never `latest` (= id). */
static void sl_file_prune(sl_store_file_t *f, uint64_t latest) {
  uint64_t *ids = NULL;
  size_t n = 0;
  char *err = NULL;
  if (sl_file_list(&f->base, &ids, &n, &err) != 0) {
    sl_log(SL_LOG_WARN, "checkpoint", "prune: %s", err ? err : "failed");
    free(err);
    return;
  }
  for (size_t i = (size_t)f->base.keep; i < n; i++) {
    if (ids[i] == latest)
      continue;
    char *p = sl_file_image(f, ids[i], 0);
    if (p && unlink(p) != 0 && errno != ENOENT)
      sl_log(SL_LOG_WARN, "checkpoint", "cannot delete %s: %s", p,
             strerror(errno));
    free(p);
  }
  free(ids);
}

static int sl_file_commit(sl_store_t *s, uint64_t id, const void *data,
                          size_t len, char **err) {
  sl_store_file_t *f = (sl_store_file_t *)s;
  if (sl_file_commit_image(f, id, data, len, err) != 0 ||
      sl_file_commit_latest(f, id, err) != 0)
    return -1;
  sl_file_prune(f, id);
  return 0;
}

/* ---- reads ----------------------------------------------------------------
 */

/* fd's size if it is a regular file of at most max bytes; else -1, *err. */
static int sl_file_size(int fd, const char *path, size_t max, size_t *size,
                        char **err) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return sl_store_errf(err, "cannot stat %s: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return sl_store_errf(err, "cannot read %s: not a regular file", path);
  if ((uint64_t)st.st_size > max)
    return sl_store_errf(err, "cannot read %s: too large", path);
  *size = (size_t)st.st_size;
  return 0;
}

/* Up to size bytes of fd into buf; *got is how many (less if it shrank). */
static int sl_file_read_all(int fd, uint8_t *buf, size_t size, size_t *got) {
  *got = 0;
  while (*got < size) {
    ssize_t r = read(fd, buf + *got, size - *got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    *got += (size_t)r;
  }
  return 0;
}

/* Reads a whole regular file into *data (malloc'd, at least 1 byte). */
static int sl_file_slurp(const char *path, size_t max, uint8_t **data,
                         size_t *len, char **err) {
  size_t size = 0;
  uint8_t *buf = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;
  if (fd < 0)
    return sl_store_errf(err, "cannot open %s: %s", path, strerror(errno));
  if (sl_file_size(fd, path, max, &size, err) != 0)
    goto done;
  if (!(buf = malloc(size ? size : 1))) {
    sl_file_oom(err);
    goto done;
  }
  if (sl_file_read_all(fd, buf, size, len) != 0) {
    sl_store_errf(err, "cannot read %s: %s", path, strerror(errno));
    goto done;
  }
  *data = buf;
  buf = NULL;
  rc = 0;
done:
  free(buf);
  close(fd);
  return rc;
}

static int sl_file_read(sl_store_t *s, uint64_t id, uint8_t **data, size_t *len,
                        char **err) {
  sl_store_file_t *f = (sl_store_file_t *)s;
  char *p = sl_file_image(f, id, 0);
  if (!p)
    return sl_file_oom(err);
  int rc = sl_file_slurp(p, SIZE_MAX, data, len, err);
  free(p);
  return rc;
}

/* "<digits>" with an optional "\n": the id, or 0 if not that. */
static uint64_t sl_file_parse_id(const char *s, size_t len) {
  if (len && s[len - 1] == '\n')
    len--;
  return sl_store_parse_id(s, len);
}

static int sl_file_latest(sl_store_t *s, uint64_t *id, char **err) {
  sl_store_file_t *f = (sl_store_file_t *)s;
  char *p = sl_file_path(f, "latest");
  uint8_t *text = NULL;
  size_t len = 0;
  if (!p)
    return sl_file_oom(err);
  if (access(p, F_OK) != 0 && errno == ENOENT) {
    free(p);
    return 0; /* none yet */
  }
  if (sl_file_slurp(p, SL_FILE_LATEST_MAX, &text, &len, err) == 0) {
    *id = sl_file_parse_id((const char *)text, len);
    if (*id == 0)
      sl_store_errf(err, "%s: not a checkpoint id", p);
  }
  free(text);
  free(p);
  return 0; /* unreadable or garbage: *id = 0, *err says why */
}

/* The id of "chk-<digits>.ckpt", or 0. */
static uint64_t sl_file_name_id(const char *name) {
  size_t n = strlen(name);
  if (n <= 9 || strncmp(name, "chk-", 4) != 0 ||
      strcmp(name + n - 5, ".ckpt") != 0)
    return 0;
  return sl_file_parse_id(name + 4, n - 9);
}

static int sl_file_push(uint64_t **ids, size_t *n, size_t *cap, uint64_t id) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    uint64_t *a = realloc(*ids, c * sizeof(*a));
    if (!a)
      return -1;
    *ids = a;
    *cap = c;
  }
  (*ids)[(*n)++] = id;
  return 0;
}

static int sl_file_list(sl_store_t *s, uint64_t **ids, size_t *n, char **err) {
  sl_store_file_t *f = (sl_store_file_t *)s;
  DIR *d = opendir(f->dir);
  size_t cap = 0;
  struct dirent *de;
  if (!d)
    return sl_store_errf(err, "cannot open %s: %s", f->dir, strerror(errno));
  while ((de = readdir(d)) != NULL) {
    uint64_t id = sl_file_name_id(de->d_name);
    if (id && sl_file_push(ids, n, &cap, id) != 0) {
      closedir(d);
      free(*ids);
      *ids = NULL;
      *n = 0;
      return sl_file_oom(err);
    }
  }
  closedir(d);
  sl_store_sort_ids(*ids, *n);
  return 0;
}

static const sl_store_vt_t sl_store_file_vt = {
    sl_file_close, sl_file_commit, sl_file_latest, sl_file_list, sl_file_read,
};
