/* test_store.c - checkpoint stores (store.h) for file:// (under a mkdtemp
 * folder, removed at the end) and memory:: commit with pruning to `keep`,
 * byte-exact reads, list order, reopen, and the file store's crash states (a
 * torn image behind `latest`, a missing or garbage `latest`, temp files).
 * Main thread only.
 */
#include "check.h"
#include "ckpt.h"
#include "store.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/sl_store_XXXXXX";

/* The image of checkpoint id (a few entries, contents depend on id). */
static void image(uint64_t id, uint8_t **img, size_t *len) {
  sl_ckpt_t c;
  char blob[64];
  sl_ckpt_init(&c, id);
  c.time_ms = (double)id * 1000;
  CHECK_EQ_INT(sl_ckpt_add_source(&c, "in", (int64_t)id * 10), 0);
  snprintf(blob, sizeof(blob), "sink-%" PRIu64, id);
  CHECK_EQ_INT(sl_ckpt_add_sink(&c, "out", blob, strlen(blob)), 0);
  CHECK_EQ_INT(sl_ckpt_add_state(&c, "count", 1, blob, strlen(blob)), 0);
  CHECK_EQ_INT(sl_ckpt_encode(&c, img, len), 0);
  sl_ckpt_free(&c);
}

static sl_store_t *open_ok(const char *url, int keep) {
  sl_store_t *s = NULL;
  char *err = NULL;
  if (sl_store_open(url, keep, &s, &err) != 0)
    CHECK_FAIL_("open %s: %s", url, err ? err : "?");
  CHECK(s != NULL && err == NULL);
  return s;
}

static void check_list(sl_store_t *s, const uint64_t *want, size_t n) {
  uint64_t *ids;
  size_t got;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_list(s, &ids, &got, &err), 0);
  CHECK(err == NULL);
  CHECK_EQ_INT(got, n);
  for (size_t i = 0; i < n && i < got; i++)
    CHECK_EQ_INT(ids[i], want[i]);
  free(ids);
}

static uint64_t latest(sl_store_t *s) {
  uint64_t id = 99;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_latest(s, &id, &err), 0);
  CHECK(err == NULL);
  return id;
}

static void check_read(sl_store_t *s, uint64_t id) {
  uint8_t *want, *got;
  size_t wlen, glen;
  char *err = NULL;
  sl_ckpt_t c;
  image(id, &want, &wlen);
  CHECK_EQ_INT(sl_store_read(s, id, &got, &glen, &err), 0);
  CHECK_EQ_MEM(got, glen, want, wlen);
  CHECK_EQ_INT(sl_ckpt_decode(got, glen, &c, NULL), 0);
  CHECK(c.id == id);
  sl_ckpt_free(&c);
  free(want);
  free(got);
}

static void commit_ok(sl_store_t *s, uint64_t id) {
  uint8_t *img;
  size_t len;
  char *err = NULL;
  image(id, &img, &len);
  if (sl_store_commit(s, id, img, len, &err) != 0)
    CHECK_FAIL_("commit %" PRIu64 ": %s", id, err ? err : "?");
  CHECK(err == NULL);
  free(img);
}

static void check_missing(sl_store_t *s, uint64_t id) {
  uint8_t *data = (uint8_t *)1;
  size_t len = 1;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_read(s, id, &data, &len, &err), -1);
  CHECK(err != NULL && data == NULL && len == 0);
  free(err);
}

/* What both schemes must do: prune to keep, latest, list, reads, reopen. */
static void test_common(const char *url) {
  static const uint64_t want[] = {5, 4, 3};
  sl_store_t *s = open_ok(url, 3);
  CHECK_EQ_INT(latest(s), 0);
  check_list(s, NULL, 0);
  check_missing(s, 1);
  for (uint64_t id = 1; id <= 5; id++) {
    commit_ok(s, id);
    CHECK_EQ_INT(latest(s), id);
  }
  check_list(s, want, 3);
  for (uint64_t id = 3; id <= 5; id++)
    check_read(s, id);
  check_missing(s, 1);
  check_missing(s, 2);
  sl_store_close(s);
  s = open_ok(url, 3); /* reopen sees the same */
  CHECK_EQ_INT(latest(s), 5);
  check_list(s, want, 3);
  check_read(s, 5);
  commit_ok(s, 5); /* recommitting an id replaces it */
  check_list(s, want, 3);
  check_read(s, 5);
  char *err = NULL;
  CHECK_EQ_INT(sl_store_commit(s, 0, "x", 1, &err), -1);
  CHECK(err != NULL);
  free(err);
  sl_store_close(s);
  s = open_ok(url, 1); /* a smaller keep prunes on the next commit */
  commit_ok(s, 6);
  static const uint64_t six[] = {6};
  check_list(s, six, 1);
  sl_store_close(s);
}

/* An older id committed after a newer one: latest names it, and pruning
 * never deletes the image latest names. */
static void test_latest_kept(const char *url) {
  sl_store_t *s = open_ok(url, 2);
  commit_ok(s, 10);
  commit_ok(s, 11);
  commit_ok(s, 3);
  CHECK_EQ_INT(latest(s), 3);
  static const uint64_t want[] = {11, 10, 3};
  check_list(s, want, 3);
  check_read(s, 3);
  sl_store_close(s);
}

static void test_open_errors(void) {
  sl_store_t *s = (sl_store_t *)1;
  char *err = NULL;
  CHECK_EQ_INT(sl_store_open("redis://x", 3, &s, &err), -1);
  CHECK(err != NULL && s == NULL);
  free(err);
  err = NULL;
  CHECK_EQ_INT(sl_store_open("file://relative/dir", 3, &s, &err), -1);
  CHECK(err != NULL && strstr(err, "absolute") != NULL);
  free(err);
  err = NULL;
  CHECK_EQ_INT(sl_store_open("memory:a", 0, &s, &err), -1);
  CHECK(err != NULL);
  free(err);
  err = NULL;
  CHECK_EQ_INT(sl_store_open("memory:", 1, &s, &err), -1);
  free(err);
  err = NULL;
  char path[256];
  snprintf(path, sizeof(path), "%s/afile", tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fclose(f);
  snprintf(path, sizeof(path), "file://%s/afile/sub", tmpdir);
  CHECK_EQ_INT(sl_store_open(path, 1, &s, &err), -1);
  CHECK(err != NULL && strstr(err, "afile") != NULL);
  free(err);
  sl_store_close(NULL);
}

/* ---- file:// only ----------------------------------------------------------
 */

static void write_file(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  CHECK_EQ_INT(fclose(f), 0);
}

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;
  CHECK(d != NULL);
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.' || strncmp(de->d_name, ".chk-", 5) == 0 ||
         strcmp(de->d_name, ".latest.tmp") == 0;
  closedir(d);
  return n;
}

static void test_file_layout(const char *dir) {
  char path[512];
  struct stat st;
  snprintf(path, sizeof(path), "%s/chk-%020d.ckpt", dir, 6);
  CHECK_EQ_INT(stat(path, &st), 0);
  snprintf(path, sizeof(path), "%s/latest", dir);
  FILE *f = fopen(path, "r");
  char text[64] = {0};
  CHECK(f != NULL && fgets(text, sizeof(text), f) != NULL);
  fclose(f);
  CHECK_EQ_STR(text, "6\n");
  CHECK_EQ_INT(count_files(dir), 2); /* chk-...6.ckpt and latest, no temps */
}

/* latest moved to 5 but chk-5 is torn: the read succeeds, decode fails, and
 * list gives the previous id to fall back to. */
static void test_file_torn(const char *dir, const char *url) {
  char path[512];
  sl_store_t *s = open_ok(url, 3);
  for (uint64_t id = 1; id <= 5; id++)
    commit_ok(s, id);
  snprintf(path, sizeof(path), "%s/chk-%020d.ckpt", dir, 5);
  CHECK_EQ_INT(truncate(path, 20), 0);
  uint8_t *data;
  size_t len;
  char *err = NULL;
  sl_ckpt_t c;
  const char *why = NULL;
  CHECK_EQ_INT(latest(s), 5);
  CHECK_EQ_INT(sl_store_read(s, 5, &data, &len, &err), 0);
  CHECK_EQ_INT(len, 20);
  CHECK_EQ_INT(sl_ckpt_decode(data, len, &c, &why), -1);
  CHECK(why != NULL);
  free(data);
  static const uint64_t want[] = {5, 4, 3};
  check_list(s, want, 3);
  check_read(s, 4); /* the fallback */
  sl_store_close(s);
}

/* No latest file: latest 0, list still shows the images. A garbage latest:
 * 0 with an error. Temp files and strangers are ignored by list. */
static void test_file_latest_states(const char *dir, const char *url) {
  char path[512];
  sl_store_t *s = open_ok(url, 3);
  snprintf(path, sizeof(path), "%s/latest", dir);
  CHECK_EQ_INT(unlink(path), 0);
  CHECK_EQ_INT(latest(s), 0);
  static const uint64_t want[] = {5, 4, 3};
  check_list(s, want, 3);
  static const char *bad[] = {
      "", "abc\n", "12x\n", "0\n", "99999999999999999999999\n", "5\n\n"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    write_file(dir, "latest", bad[i]);
    uint64_t id = 99;
    char *err = NULL;
    CHECK_EQ_INT(sl_store_latest(s, &id, &err), 0);
    CHECK_EQ_INT(id, 0);
    CHECK(err != NULL && strstr(err, "latest") != NULL);
    free(err);
  }
  write_file(dir, "latest", "4");
  CHECK_EQ_INT(latest(s), 4);
  write_file(dir, ".chk-00000000000000000009.tmp", "partial");
  write_file(dir, ".latest.tmp", "9\n");
  write_file(dir, "chk-x.ckpt", "");
  write_file(dir, "chk-7.ckpt.bak", "");
  write_file(dir, "notes.txt", "");
  check_list(s, want, 3);
  sl_store_close(s);
}

/* A store in a folder that does not exist yet, several levels down. */
static void test_file_mkdirs(void) {
  char dir[256], url[300];
  snprintf(dir, sizeof(dir), "%s/a/b/c", tmpdir);
  snprintf(url, sizeof(url), "file://%s//", dir); /* trailing slashes */
  sl_store_t *s = open_ok(url, 2);
  commit_ok(s, 1);
  sl_store_close(s);
  char path[512];
  struct stat st;
  snprintf(path, sizeof(path), "%s/chk-%020d.ckpt", dir, 1);
  CHECK_EQ_INT(stat(path, &st), 0);
}

/* A write that fails (a folder squats the temp file's name; works as root,
 * unlike a read-only folder) says what and where, and moves nothing. */
static void test_file_write_error(void) {
  char dir[256], url[300], tmp[512];
  snprintf(dir, sizeof(dir), "%s/err", tmpdir);
  snprintf(url, sizeof(url), "file://%s", dir);
  sl_store_t *s = open_ok(url, 2);
  commit_ok(s, 1);
  snprintf(tmp, sizeof(tmp), "%s/.chk-%020d.tmp", dir, 2);
  CHECK_EQ_INT(mkdir(tmp, 0755), 0);
  char *err = NULL;
  CHECK_EQ_INT(sl_store_commit(s, 2, "x", 1, &err), -1);
  CHECK(err != NULL && strstr(err, "cannot create") != NULL &&
        strstr(err, tmp) != NULL && strstr(err, "Is a directory") != NULL);
  free(err);
  CHECK_EQ_INT(latest(s), 1);
  static const uint64_t one[] = {1};
  check_list(s, one, 1);
  sl_store_close(s);
}

static void rm_rf(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

static void test_file(void) {
  char dir[256], url[300];
  snprintf(dir, sizeof(dir), "%s/ckpt", tmpdir);
  snprintf(url, sizeof(url), "file://%s", dir);
  test_common(url);
  test_file_layout(dir);
  rm_rf(dir);
  test_latest_kept(url);
  rm_rf(dir);
  test_file_torn(dir, url);
  test_file_latest_states(dir, url);
  test_file_mkdirs();
  test_file_write_error();
}

static void test_memory(void) {
  test_common("memory:common");
  test_latest_kept("memory:kept");
  sl_store_t *a = open_ok("memory:other", 3); /* names are separate */
  CHECK_EQ_INT(latest(a), 0);
  check_list(a, NULL, 0);
  sl_store_t *b = open_ok("memory:common", 3); /* two handles, one store */
  CHECK_EQ_INT(latest(b), 6);
  commit_ok(b, 7);
  sl_store_close(b);
  sl_store_close(a);
  a = open_ok("memory:common", 3);
  CHECK_EQ_INT(latest(a), 7);
  sl_store_close(a);
}

int main(void) {
  CHECK(mkdtemp(tmpdir) != NULL);
  test_open_errors();
  test_memory();
  test_file();
  rm_rf(tmpdir);
  return CHECK_DONE();
}
