/* fuzz_codec.c - libFuzzer target for the record codec's reader side.
 *
 * Run it: `make fuzz` (FUZZ_TIME=60 seconds by default) builds it with
 * clang into build-fuzz/ (CMake option SLUICE_FUZZ) and runs it; add a
 * corpus directory to the command to keep findings. Needs clang and its
 * runtime (apt-get install -y clang libclang-rt-14-dev).
 *
 * Each input is read as a batch (sl_codec_reader_init/next), every record's
 * value and key go through sl_codec_line, and the whole input is also fed to
 * sl_codec_line as one object. The bytes are copied into an exact-size heap
 * block so AddressSanitizer catches any read past the end.
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

static void fuzz_batch(const uint8_t *p, size_t n, sl_buf_t *out) {
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  if (sl_codec_reader_init(&r, p, n) < 0)
    return;
  int rc;
  while ((rc = sl_codec_reader_next(&r, &rec)) == 1) {
    if (rec.value < p || rec.value >= rec.value_end ||
        rec.value_end != rec.key || rec.key >= rec.key_end ||
        rec.key_end > p + n)
      abort(); /* spans must lie inside the input, in order */
    out->len = 0;
    if (sl_codec_line(out, rec.value, rec.value_end) < 0 ||
        sl_codec_line(out, rec.key, rec.key_end) < 0)
      abort(); /* the reader validated them */
  }
  if (rc < 0 && !r.error)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *p = malloc(size ? size : 1);
  if (!p)
    return 0;
  if (size)
    memcpy(p, data, size);
  sl_buf_t out;
  sl_buf_init(&out);
  fuzz_batch(p, size, &out);
  out.len = 0;
  (void)sl_codec_line(&out, p, p + size);
  sl_buf_free(&out);
  free(p);
  return 0;
}
