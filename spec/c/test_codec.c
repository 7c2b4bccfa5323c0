/* test_codec.c - the record codec against the real thing: a LuaJIT state
 * created here encodes and decodes with string.buffer, and the C writer,
 * reader and sl_codec_line must agree with it byte for byte. Also malformed,
 * truncated and random inputs, which must fail cleanly (run it under
 * -fsanitize=address,undefined). Single-threaded.
 */
#include "check.h"
#include "codec.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>

static lua_State *L;

typedef struct {
  uint8_t *p;
  size_t n;
} bytes_t;

static void lua_run(const char *code) {
  if (luaL_dostring(L, code) != 0)
    CHECK_FAIL_("lua: %s", lua_tostring(L, -1));
}

/* Evaluates `return pre..expr..post` in Lua; the result must be a string,
 * copied out. */
static bytes_t lua_bytes(const char *pre, const char *expr, const char *post) {
  const char *code = lua_pushfstring(L, "return %s%s%s", pre, expr, post);
  if (luaL_loadstring(L, code) != 0 || lua_pcall(L, 0, 1, 0) != 0)
    CHECK_FAIL_("lua: %s: %s", expr, lua_tostring(L, -1));
  bytes_t b;
  const char *s = lua_tolstring(L, -1, &b.n);
  CHECK(s != NULL);
  b.p = malloc(b.n ? b.n : 1);
  CHECK(b.p != NULL);
  memcpy(b.p, s, b.n);
  lua_pop(L, 2);
  return b;
}

/* buffer.encode(expr) */
static bytes_t lua_enc(const char *expr) {
  return lua_bytes("buffer.encode(", expr, ")");
}

/* Reads a .U the way LuaJIT does (test-side, trusted input). */
static size_t get_u(const uint8_t *p, uint32_t *v) {
  if (p[0] < 0xe0) {
    *v = p[0];
    return 1;
  }
  if (p[0] != 0xff) {
    *v = ((uint32_t)(p[0] & 0x1f) << 8) + p[1] + 0xe0;
    return 2;
  }
  *v = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 |
       (uint32_t)p[4] << 24;
  return 5;
}

static void check_bad(const uint8_t *p, size_t n);
static void check_bad_line(const uint8_t *p, size_t n);
static void expect_line(const uint8_t *p, const uint8_t *end, const char *want);

/* ---- writer vs buffer.encode --------------------------------------------- */

static size_t test_len(int i, int n) {
  static const size_t lens[] = {0,    1,    191,  192,   223, 224,
                                8000, 8127, 8128, 70000, 5,   17};
  if (n <= 12)
    return lens[i % 12];
  return (size_t)(i * 37 % 300); /* many sizes around the 1/2-byte bound */
}

static double test_time(int i) {
  static const double t[] = {1764000000123.0, 0.5, -3.25, 0.0, 1e300, 7.0};
  return t[i % 6] + i;
}

static void fill(char *s, size_t n, int i) {
  for (size_t j = 0; j < n; j++)
    s[j] = (char)((i * 131 + (int)j * 7) & 0xff); /* all byte values */
}

/* The same records as a Lua flat table, encoded by LuaJIT. */
static bytes_t lua_batch(int n, char *scratch) {
  lua_getglobal(L, "buffer");
  lua_getfield(L, -1, "encode");
  lua_createtable(L, 3 * n, 0);
  for (int i = 0; i < n; i++) {
    size_t len = test_len(i, n);
    fill(scratch, len, i);
    lua_pushlstring(L, scratch, len);
    lua_rawseti(L, -2, 3 * i + 1); /* key: nil, left unset */
    lua_pushnumber(L, test_time(i));
    lua_rawseti(L, -2, 3 * i + 3);
  }
  CHECK_EQ_INT(lua_pcall(L, 1, 1, 0), 0);
  bytes_t b;
  const char *s = lua_tolstring(L, -1, &b.n);
  b.p = malloc(b.n);
  CHECK(b.p != NULL);
  memcpy(b.p, s, b.n);
  lua_pop(L, 2);
  return b;
}

static void c_batch(sl_codec_writer_t *w, int n, char *scratch) {
  CHECK_EQ_INT(sl_codec_writer_begin(w), 0);
  for (int i = 0; i < n; i++) {
    size_t len = test_len(i, n);
    fill(scratch, len, i);
    CHECK_EQ_INT(sl_codec_writer_add_string(w, scratch, len, test_time(i)), 0);
  }
  CHECK_EQ_INT(w->nrec, n);
  CHECK_EQ_INT(sl_codec_writer_finish(w), 0);
}

/* LuaJIT decodes the C bytes into exactly the records that were written. */
static void check_lua_decodes(const sl_codec_writer_t *w, int n,
                              char *scratch) {
  lua_getglobal(L, "decode_check");
  lua_pushlstring(L, (const char *)w->buf.data, w->buf.len);
  CHECK_EQ_INT(lua_pcall(L, 1, 1, 0), 0);
  CHECK(lua_istable(L, -1));
  CHECK_EQ_INT(lua_objlen(L, -1), 3 * n);
  for (int i = 0; i < n; i++) {
    size_t len = test_len(i, n), got;
    fill(scratch, len, i);
    lua_rawgeti(L, -1, 3 * i + 1);
    const char *s = lua_tolstring(L, -1, &got);
    CHECK(s != NULL);
    CHECK_EQ_MEM(s, got, scratch, len);
    lua_rawgeti(L, -2, 3 * i + 2);
    CHECK(lua_isnil(L, -1));
    lua_rawgeti(L, -3, 3 * i + 3);
    CHECK(lua_tonumber(L, -1) == test_time(i));
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
}

/* The C reader walks the C bytes and finds the same records. */
static void check_c_reads(const sl_codec_writer_t *w, int n, char *scratch) {
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  CHECK_EQ_INT(sl_codec_reader_init(&r, w->buf.data, w->buf.len), 0);
  CHECK_EQ_INT(r.nrec, n);
  sl_buf_t line;
  sl_buf_init(&line);
  for (int i = 0; i < n; i++) {
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 1);
    size_t len = test_len(i, n);
    fill(scratch, len, i);
    line.len = 0;
    CHECK_EQ_INT(sl_codec_line(&line, rec.value, rec.value_end), 0);
    CHECK_EQ_MEM(line.data, line.len, scratch, len);
    CHECK(rec.key_end == rec.key + 1 && rec.key[0] == 0x00);
    CHECK(rec.time_ms == test_time(i));
  }
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
  sl_buf_free(&line);
}

static void test_writer_matches_luajit(void) {
  static const int sizes[] = {0, 1, 2, 12, 300};
  char *scratch = malloc(70000);
  CHECK(scratch != NULL);
  sl_codec_writer_t w;
  sl_codec_writer_init(&w);
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    int n = sizes[k];
    bytes_t lj = lua_batch(n, scratch);
    c_batch(&w, n, scratch);
    if (n == 0) { /* both are LuaJIT's {} */
      CHECK_EQ_MEM(w.buf.data, w.buf.len, lj.p, lj.n);
    } else {
      /* same bytes after the header; the header is the same count in the
       * 5-byte .U form that finish patches */
      uint32_t a;
      CHECK_EQ_INT(lj.p[0], 0x0c);
      size_t hl = 1 + get_u(lj.p + 1, &a);
      CHECK_EQ_INT(a, 3 * n + 1);
      uint8_t hdr[6] = {0x0c,
                        0xff,
                        (uint8_t)a,
                        (uint8_t)(a >> 8),
                        (uint8_t)(a >> 16),
                        (uint8_t)(a >> 24)};
      CHECK_EQ_MEM(w.buf.data, (size_t)6, hdr, sizeof(hdr));
      CHECK_EQ_MEM(w.buf.data + 6, w.buf.len - 6, lj.p + hl, lj.n - hl);
    }
    check_lua_decodes(&w, n, scratch);
    check_c_reads(&w, n, scratch);
    free(lj.p);
  }
  sl_codec_writer_free(&w);
  free(scratch);
}

static void test_writer_states(void) {
  sl_codec_writer_t w;
  sl_codec_writer_init(&w);
  CHECK_EQ_INT(sl_codec_writer_add_string(&w, "x", 1, 1), -1); /* no begin */
  CHECK_EQ_INT(sl_codec_writer_finish(&w), -1);
  CHECK_EQ_INT(sl_codec_writer_begin(&w), 0);
  CHECK_EQ_INT(sl_codec_writer_add_string(&w, "x", 1, 1), 0);
  CHECK_EQ_INT(sl_codec_writer_finish(&w), 0);
  CHECK_EQ_INT(sl_codec_writer_finish(&w), -1); /* finished: begin again */
  CHECK_EQ_INT(sl_codec_writer_add_string(&w, "y", 1, 1), -1);
  static const uint8_t one[] = {0x0c, 0xff, 4, 0, 0, 0, 0x21, 'x',  0x00,
                                0x07, 0,    0, 0, 0, 0, 0,    0xf0, 0x3f};
  CHECK_EQ_MEM(w.buf.data, w.buf.len, one, sizeof(one));
  CHECK_EQ_INT(sl_codec_writer_begin(&w), 0); /* reuse */
  CHECK_EQ_INT(sl_codec_writer_add_string(&w, NULL, 0, 2), 0);
  CHECK_EQ_INT(sl_codec_writer_finish(&w), 0);
  CHECK_EQ_INT(w.nrec, 1);
  CHECK_EQ_INT(w.buf.len, 6 + 1 + 1 + 9);
  sl_codec_writer_free(&w);
  sl_codec_writer_free(&w); /* twice is fine */
}

/* ---- add_fields: a table of string fields ------------------------------ */

typedef struct {
  const char *kv[2 * 64];
  size_t lens[2 * 64];
  size_t npairs;
} fields_t;

static void field_add(fields_t *f, const char *k, size_t kn, const char *v,
                      size_t vn) {
  CHECK(f->npairs < 64);
  f->kv[2 * f->npairs] = k;
  f->lens[2 * f->npairs] = kn;
  f->kv[2 * f->npairs + 1] = v;
  f->lens[2 * f->npairs + 1] = vn;
  f->npairs++;
}

static void field_adds(fields_t *f, const char *k, const char *v) {
  field_add(f, k, strlen(k), v, strlen(v));
}

/* Pushes the Lua table the pairs stand for (a later key overwrites). */
static void push_fields(const fields_t *f) {
  lua_newtable(L);
  for (size_t i = 0; i < f->npairs; i++) {
    lua_pushlstring(L, f->kv[2 * i], f->lens[2 * i]);
    lua_pushlstring(L, f->kv[2 * i + 1], f->lens[2 * i + 1]);
    lua_rawset(L, -3);
  }
}

static void test_writer_fields(void) {
  enum { NREC = 6 };
  fields_t f[NREC];
  memset(f, 0, sizeof f);
  char *big = malloc(70000);
  CHECK(big != NULL);
  fill(big, 70000, 3);
  char keys[40][8];
  /* 0: a Redis entry */
  field_adds(&f[0], "v", "1");
  field_adds(&f[0], "name", "hello world");
  /* 1: no pairs: {} */
  /* 2: a key given twice keeps its last value */
  field_adds(&f[2], "f", "1");
  field_adds(&f[2], "g", "x");
  field_adds(&f[2], "f", "2");
  /* 3: 40 keys (past the stack arrays), long strings (2- and 5-byte tags),
   * empty key and value, bytes that JSON escapes, a NUL, repeats */
  for (int i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", 39 - i);
    field_add(&f[3], keys[i], strlen(keys[i]), big + i, (size_t)i * 7);
  }
  field_add(&f[3], "", 0, "", 0);
  field_add(&f[3], "q\"\n\0z", 5, big, 300);
  field_add(&f[3], big + 100, 224, big, 70000);
  field_add(&f[3], "k7", 2, "again", 5);
  field_add(&f[3], "k39", 3, "last", 4);
  /* 4: one pair, compared byte for byte with buffer.encode below */
  field_adds(&f[4], "a", "b");
  /* 5: a plain string record in between (add_string), f[5] unused */

  sl_codec_writer_t w;
  sl_codec_writer_init(&w);
  CHECK_EQ_INT(sl_codec_writer_add_fields(&w, f[0].kv, f[0].lens, 2, 1), -1);
  CHECK_EQ_INT(sl_codec_writer_begin(&w), 0);
  CHECK_EQ_INT(sl_codec_writer_add_fields(&w, NULL, NULL, 1, 1), -1);
  size_t huge[2] = {(size_t)UINT32_MAX, 1};
  CHECK_EQ_INT(sl_codec_writer_add_fields(&w, f[0].kv, huge, 1, 1), -1);
  CHECK_EQ_INT(w.nrec, 0);
  for (int i = 0; i < NREC; i++) {
    if (i == 5)
      CHECK_EQ_INT(sl_codec_writer_add_string(&w, "plain", 5, 15), 0);
    else
      CHECK_EQ_INT(sl_codec_writer_add_fields(&w, f[i].kv, f[i].lens,
                                              f[i].npairs, 10 + i),
                   0);
  }
  CHECK_EQ_INT(w.nrec, NREC);
  CHECK_EQ_INT(sl_codec_writer_finish(&w), 0);

  /* LuaJIT decodes exactly the tables (and the string) */
  lua_run("function same(a, b)\n"
          "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
          "    return a == b end\n"
          "  for k, v in pairs(a) do if b[k] ~= v then return false end end\n"
          "  for k, v in pairs(b) do if a[k] ~= v then return false end end\n"
          "  return true\n"
          "end\n");
  /* (decode_check compares two decodings by ==: not for tables) */
  lua_getglobal(L, "buffer");
  lua_getfield(L, -1, "decode");
  lua_remove(L, -2);
  lua_pushlstring(L, (const char *)w.buf.data, w.buf.len);
  if (lua_pcall(L, 1, 1, 0) != 0)
    CHECK_FAIL_("lua: %s", lua_tostring(L, -1));
  CHECK(lua_istable(L, -1));
  CHECK_EQ_INT(lua_objlen(L, -1), 3 * NREC);
  for (int i = 0; i < NREC; i++) {
    lua_getglobal(L, "same");
    lua_rawgeti(L, -2, 3 * i + 1);
    if (i == 5)
      lua_pushliteral(L, "plain");
    else
      push_fields(&f[i]);
    CHECK_EQ_INT(lua_pcall(L, 2, 1, 0), 0);
    if (!lua_toboolean(L, -1))
      CHECK_FAIL_("record %d: LuaJIT decodes another table", i);
    lua_pop(L, 1);
    lua_rawgeti(L, -1, 3 * i + 2);
    CHECK(lua_isnil(L, -1));
    lua_rawgeti(L, -2, 3 * i + 3);
    CHECK(lua_tonumber(L, -1) == 10 + i);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);

  /* the C reader and sl_codec_line: JSON with sorted keys, the same text
   * as for LuaJIT's own encoding of the table */
  static const char *const want[NREC] = {
      "{\"name\":\"hello world\",\"v\":\"1\"}",
      "{}",
      "{\"f\":\"2\",\"g\":\"x\"}",
      NULL,
      "{\"a\":\"b\"}",
      "plain"};
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  CHECK_EQ_INT(sl_codec_reader_init(&r, w.buf.data, w.buf.len), 0);
  CHECK_EQ_INT(r.nrec, NREC);
  sl_buf_t line;
  sl_buf_init(&line);
  for (int i = 0; i < NREC; i++) {
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 1);
    CHECK(rec.key_end == rec.key + 1 && rec.key[0] == 0x00);
    CHECK(rec.time_ms == 10 + i);
    if (want[i]) {
      expect_line(rec.value, rec.value_end, want[i]);
    }
    if (i == 5)
      continue;
    /* LuaJIT's encoding of the same table */
    lua_getglobal(L, "buffer");
    lua_getfield(L, -1, "encode");
    push_fields(&f[i]);
    CHECK_EQ_INT(lua_pcall(L, 1, 1, 0), 0);
    size_t ln;
    const uint8_t *lj = (const uint8_t *)lua_tolstring(L, -1, &ln);
    line.len = 0;
    CHECK_EQ_INT(sl_codec_line(&line, lj, lj + ln), 0);
    size_t mark = line.len;
    CHECK_EQ_INT(sl_codec_line(&line, rec.value, rec.value_end), 0);
    CHECK_EQ_MEM(line.data + mark, line.len - mark, line.data, mark);
    if (i == 4 || i == 1) /* one pair or none: the very same bytes */
      CHECK_EQ_MEM(rec.value, (size_t)(rec.value_end - rec.value), lj, ln);
    lua_pop(L, 2);
  }
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
  CHECK(r.error == NULL);
  /* record 3's keys come out sorted bytewise, the last value of each */
  CHECK_EQ_INT(sl_codec_reader_init(&r, w.buf.data, w.buf.len), 0);
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 1);
  line.len = 0;
  CHECK_EQ_INT(sl_codec_line(&line, rec.value, rec.value_end), 0);
  CHECK_EQ_INT(sl_buf_append(&line, "", 1), 0);
  const char *j = (const char *)line.data;
  CHECK(strncmp(j, "{\"\":\"\",\"E", 8) == 0); /* the 224-byte key: 'E'... */
  CHECK(strstr(j, "\",\"k0\":\"") != NULL);
  CHECK(strstr(j, ",\"k39\":\"last\",\"k4\":") != NULL);
  CHECK(strstr(j, ",\"k7\":\"again\",\"k8\":") != NULL);
  CHECK(strstr(j, ",\"q\\\"\\n\\u0000z\":\"") != NULL);
  sl_buf_free(&line);
  sl_codec_writer_free(&w);
  free(big);
}

static void test_buf(void) {
  sl_buf_t b;
  sl_buf_init(&b);
  CHECK_EQ_INT(sl_buf_append(&b, "abc", 3), 0);
  CHECK_EQ_INT(sl_buf_append(&b, NULL, 0), 0);
  CHECK_EQ_INT(sl_buf_reserve(&b, 100000), 0);
  CHECK(b.cap >= 100003);
  CHECK_EQ_INT(sl_buf_reserve(&b, SIZE_MAX), -1);
  size_t n;
  uint8_t *d = sl_buf_take(&b, &n);
  CHECK_EQ_MEM(d, n, "abc", (size_t)3);
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
  free(d);
  sl_buf_free(&b);
}

/* ---- reader over LuaJIT-encoded batches ---------------------------------- */

static void expect_line(const uint8_t *p, const uint8_t *end,
                        const char *want) {
  sl_buf_t out;
  sl_buf_init(&out);
  CHECK_EQ_INT(sl_buf_append(&out, "<", 1), 0); /* line appends */
  int rc = sl_codec_line(&out, p, end);
  if (rc != 0)
    CHECK_FAIL_("sl_codec_line failed, want %s", want);
  CHECK_EQ_INT(sl_buf_append(&out, "", 1), 0);
  CHECK_EQ_STR((const char *)out.data + 1, want);
  sl_buf_free(&out);
}

static void test_reader_luajit_batch(void) {
  bytes_t b = lua_enc("{ 'plain', nil, 1.5,"
                      "  42, 'k1', 2,"
                      "  true, 7, 3,"
                      "  false, 0.25, 4,"
                      "  {a = {1, 2, {x = 'y'}}, n = -0.5}, 'k', 5,"
                      "  string.rep('z', 300), nil, 6,"
                      "  {}, {1, 2}, 7 }");
  static const struct {
    const char *value, *key;
    double t;
  } want[] = {
      {"plain", "nil", 1.5},
      {"42", "k1", 2},
      {"true", "7", 3},
      {"false", "0.25", 4},
      {"{\"a\":[1,2,{\"x\":\"y\"}],\"n\":-0.5}", "k", 5},
      {NULL, "nil", 6},
      {"{}", "[1,2]", 7},
  };
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  CHECK_EQ_INT(sl_codec_reader_init(&r, b.p, b.n), 0);
  CHECK_EQ_INT(r.nrec, 7);
  char z[301];
  memset(z, 'z', 300);
  z[300] = 0;
  for (int i = 0; i < 7; i++) {
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 1);
    expect_line(rec.value, rec.value_end, want[i].value ? want[i].value : z);
    expect_line(rec.key, rec.key_end, want[i].key);
    CHECK(rec.time_ms == want[i].t);
  }
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
  CHECK(r.error == NULL);
  free(b.p);

  /* {} is an empty batch */
  b = lua_enc("{}");
  CHECK_EQ_INT(sl_codec_reader_init(&r, b.p, b.n), 0);
  CHECK_EQ_INT(r.nrec, 0);
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
  free(b.p);

  /* a time encoded as 0x06 int32 (dual-number builds) */
  static const uint8_t itime[] = {0x0c, 0x04, 0x21, 'v',  0x00,
                                  0x06, 0xfe, 0xff, 0xff, 0xff};
  CHECK_EQ_INT(sl_codec_reader_init(&r, itime, sizeof(itime)), 0);
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 1);
  CHECK(rec.time_ms == -2.0);
  CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), 0);
}

/* ---- sl_codec_line ------------------------------------------------------- */

static void line_is(const char *expr, const char *want) {
  bytes_t b = lua_enc(expr);
  expect_line(b.p, b.p + b.n, want);
  free(b.p);
}

static void test_line_scalars(void) {
  line_is("'hello'", "hello");
  line_is("''", "");
  line_is("'a\\nb\\0c'", "a\nb"); /* as is (C string compare stops at NUL) */
  line_is("3", "3");
  line_is("-5", "-5");
  line_is("0", "0");
  line_is("-0.0", "-0");
  line_is("0.1", "0.1");
  line_is("1/3", "0.33333333333333");
  line_is("1e15", "1e+15");
  line_is("2^53", "9.007199254741e+15");
  line_is("99999999999999", "99999999999999");
  line_is("123456789012345", "1.2345678901235e+14"); /* tie: away */
  line_is("-123456789012345", "-1.2345678901235e+14");
  line_is("123456789012325", "1.2345678901233e+14");
  line_is("1234567890123.25", "1234567890123.3");
  line_is("99999999999999.5", "1e+14");
  line_is("0.000123456789012345", "0.00012345678901234"); /* not a tie */
  line_is("1e100", "1e+100");
  line_is("-1.5e-300", "-1.5e-300");
  line_is("1/0", "inf");
  line_is("-1/0", "-inf");
  line_is("0/0", "nan");
  line_is("-(0/0)", "nan");
  line_is("true", "true");
  line_is("false", "false");
  line_is("nil", "nil");
  static const uint8_t i32[] = {0x06, 0x85, 0xff, 0xff, 0xff};
  expect_line(i32, i32 + sizeof(i32), "-123");
  static const uint8_t s5[] = {0xff, 0x22, 0, 0, 0, 'a', 'b'}; /* long .U */
  expect_line(s5, s5 + sizeof(s5), "ab");
}

static void test_line_tables(void) {
  line_is("{}", "{}");
  line_is("{1, 2, 3}", "[1,2,3]");
  line_is("{'a', true, false, 0.5}", "[\"a\",true,false,0.5]");
  line_is("{a = 1, b = 'x'}", "{\"a\":1,\"b\":\"x\"}");
  line_is("{b = 1, a = 2, B = 3, aa = 4, [''] = 5}",
          "{\"\":5,\"B\":3,\"a\":2,\"aa\":4,\"b\":1}");
  line_is("{['\\xc3\\xa9'] = 1, z = 2}", "{\"z\":2,\"\xc3\xa9\":1}");
  line_is("{1, 2, x = 3}", "{\"1\":1,\"2\":2,\"x\":3}");
  line_is("{1, nil, 3}", "{\"1\":1,\"3\":3}");
  line_is("{nil, nil, 3}", "{\"3\":3}");
  line_is("{[0] = 'z', 'a'}", "{\"0\":\"z\",\"1\":\"a\"}");
  line_is("{[10] = 'a', [2] = 'b', [1] = 'c'}",
          "{\"1\":\"c\",\"10\":\"a\",\"2\":\"b\"}");
  line_is("{[1.5] = 1, [true] = 2, [false] = 3, [-0.25] = 4}",
          "{\"-0.25\":4,\"1.5\":1,\"false\":3,\"true\":2}");
  line_is("{[{1}] = 'tk'}", "{\"[1]\":\"tk\"}");
  line_is("{a = {1, {b = true}}, c = {}}", "{\"a\":[1,{\"b\":true}],\"c\":{}}");
  line_is("{1/0, -1/0, 0/0, 0.1, -0.0, 1e15, 2^53, 3}",
          "[null,null,null,0.1,-0,1e+15,9.007199254741e+15,3]");
  line_is("{s = 'q\"b\\\\n\\n\\r\\t\\b\\f\\1\\31\\127/\\xff'}",
          "{\"s\":\"q\\\"b\\\\n\\n\\r\\t\\b\\f\\u0001\\u001f\x7f/\xff\"}");
  line_is("{['k\\n\"'] = 1}", "{\"k\\n\\\"\":1}");
  line_is("{'a\\0b'}", "[\"a\\u0000b\"]");
  /* more keys than fit on the stack: 40 keys, sorted */
  line_is("(function() local t = {} for i = 1, 40 do t['k' .. i] = i end "
          "return t end)()",
          "{\"k1\":1,\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,"
          "\"k15\":15,\"k16\":16,\"k17\":17,\"k18\":18,\"k19\":19,\"k2\":2,"
          "\"k20\":20,\"k21\":21,\"k22\":22,\"k23\":23,\"k24\":24,\"k25\":25,"
          "\"k26\":26,\"k27\":27,\"k28\":28,\"k29\":29,\"k3\":3,\"k30\":30,"
          "\"k31\":31,\"k32\":32,\"k33\":33,\"k34\":34,\"k35\":35,\"k36\":36,"
          "\"k37\":37,\"k38\":38,\"k39\":39,\"k4\":4,\"k40\":40,\"k5\":5,"
          "\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9}");
  /* the table header in every .U form LuaJIT accepts */
  static const uint8_t t5[] = {0x0c, 0xff, 3, 0, 0, 0, 0x21, 'a', 0x02};
  expect_line(t5, t5 + sizeof(t5), "[\"a\",true]");
  /* a 5-byte-tag nil is still a nil (a hole, not JSON null) */
  static const uint8_t n5[] = {0x0c, 0x03, 0xff, 0, 0, 0, 0, 0x02};
  expect_line(n5, n5 + sizeof(n5), "{\"2\":true}");
  /* a table key inside a table key is refused (its text would be escaped
   * once per level), anywhere under the outer key */
  line_is("{[{a = 1}] = 1, [{{2}}] = 2}", "{\"[[2]]\":2,\"{\\\"a\\\":1}\":1}");
  bytes_t kk = lua_enc("{[{[{}] = 1}] = 1}");
  check_bad_line(kk.p, kk.n);
  free(kk.p);
  kk = lua_enc("{ {[{[{}] = 1}] = 1}, nil, 1}");
  check_bad(kk.p, kk.n);
  free(kk.p);
  kk = lua_enc("{[{x = {[{}] = 1}}] = 1}");
  check_bad_line(kk.p, kk.n);
  free(kk.p);
  /* a hostile hash entry with a nil value is skipped, like LuaJIT does */
  static const uint8_t hn[] = {0x09, 0x02, 0x21, 'a', 0x00, 0x21, 'b', 0x02};
  expect_line(hn, hn + sizeof(hn), "{\"b\":true}");
}

/* Numbers: sl_codec_line agrees with LuaJIT's tostring. */
static void test_line_numbers_vs_tostring(void) {
  uint64_t x = 88172645463325252ull;
  sl_buf_t out;
  sl_buf_init(&out);
  for (int i = 0; i < 60000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double d;
    switch (i % 6) {
    case 4: /* 15-digit integers ending in 5, exact ties at 14 digits */
      d = (double)((x % 900000000000000ull + 100000000000000ull) / 10 * 10 + 5);
      d /= (double)(1 << (x >> 60)); /* and dyadic fractions of them */
      break;
    case 5:
      d = -(double)(x % 100000000000000000ull) / 1000.0;
      break;
    case 0:
      memcpy(&d, &x, 8); /* any bit pattern */
      break;
    case 1:
      d = (double)(int64_t)(x >> (x & 63)) * ((x & 64) ? -1 : 1);
      break;
    case 2:
      d = (double)(x % 100000) / 100.0;
      break;
    default:
      d = ldexp((double)(x >> 11), (int)(x % 200) - 150);
    }
    uint8_t enc[9] = {0x07};
    memcpy(enc + 1, &d, 8);
    out.len = 0;
    CHECK_EQ_INT(sl_codec_line(&out, enc, enc + 9), 0);
    CHECK_EQ_INT(sl_buf_append(&out, "", 1), 0);
    lua_getglobal(L, "tostring");
    lua_pushnumber(L, d);
    lua_call(L, 1, 1);
    const char *want = lua_tostring(L, -1);
    if (strcmp((const char *)out.data, want) != 0)
      CHECK_FAIL_("number %a: C %s, LuaJIT %s", d, (const char *)out.data,
                  want);
    lua_pop(L, 1);
  }
  sl_check_passed++;
  sl_buf_free(&out);
}

/* ---- malformed input ----------------------------------------------------- */

/* Reads the whole batch; returns -1 if the reader reports it malformed. */
static int read_all(const uint8_t *p, size_t n, sl_buf_t *out) {
  sl_codec_reader_t r;
  sl_codec_record_t rec;
  if (sl_codec_reader_init(&r, p, n) < 0) {
    CHECK(r.error != NULL);
    return -1;
  }
  int rc;
  while ((rc = sl_codec_reader_next(&r, &rec)) == 1) {
    CHECK(rec.value >= p && rec.value < rec.value_end &&
          rec.value_end <= rec.key && rec.key < rec.key_end &&
          rec.key_end <= p + n);
    out->len = 0;
    CHECK_EQ_INT(sl_codec_line(out, rec.value, rec.value_end), 0);
    CHECK_EQ_INT(sl_codec_line(out, rec.key, rec.key_end), 0);
  }
  if (rc < 0) {
    CHECK(r.error != NULL);
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), -1); /* stays failed */
  }
  return rc;
}

/* Every strict prefix of a valid batch is rejected; copies are exact-size
 * heap blocks so ASan sees any over-read. */
static void check_truncations(const bytes_t *b) {
  sl_buf_t out;
  sl_buf_init(&out);
  for (size_t n = 0; n < b->n; n++) {
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    memcpy(c, b->p, n);
    CHECK_EQ_INT(read_all(c, n, &out), -1);
    free(c);
  }
  uint8_t *c = malloc(b->n);
  CHECK(c != NULL);
  memcpy(c, b->p, b->n);
  CHECK_EQ_INT(read_all(c, b->n, &out), 0);
  free(c);
  sl_buf_free(&out);
}

static void check_bad(const uint8_t *p, size_t n) {
  sl_buf_t out;
  sl_buf_init(&out);
  uint8_t *c = malloc(n ? n : 1);
  CHECK(c != NULL);
  memcpy(c, p, n);
  CHECK_EQ_INT(read_all(c, n, &out), -1);
  free(c);
  sl_buf_free(&out);
}

static void check_bad_line(const uint8_t *p, size_t n) {
  sl_buf_t out;
  sl_buf_init(&out);
  CHECK_EQ_INT(sl_buf_append(&out, "keep", 4), 0);
  uint8_t *c = malloc(n ? n : 1);
  CHECK(c != NULL);
  memcpy(c, p, n);
  CHECK_EQ_INT(sl_codec_line(&out, c, c + n), -1);
  CHECK_EQ_MEM(out.data, out.len, "keep", (size_t)4); /* left as it was */
  free(c);
  sl_buf_free(&out);
}

#define BAD(...)                                                               \
  do {                                                                         \
    static const uint8_t b_[] = {__VA_ARGS__};                                 \
    check_bad(b_, sizeof(b_));                                                 \
  } while (0)

#define BAD_LINE(...)                                                          \
  do {                                                                         \
    static const uint8_t b_[] = {__VA_ARGS__};                                 \
    check_bad_line(b_, sizeof(b_));                                            \
  } while (0)

static void test_malformed(void) {
  bytes_t b = lua_enc("{ 'v', nil, 1, {a = {1, 2, {x = 'y'}}, [3] = true},"
                      "  'key', 2, string.rep('s', 300), 1.5, 3 }");
  check_truncations(&b);
  free(b.p);
  b = lua_enc("{}");
  check_truncations(&b);
  free(b.p);

  sl_codec_reader_t r;
  CHECK_EQ_INT(sl_codec_reader_init(&r, NULL, 0), -1);
  BAD(0x0c, 0x03, 0x21, 'v', 0x00);                               /* 2 slots */
  BAD(0x0a, 0x03, 0x21, 'v', 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0); /* 0-based */
  BAD(0x0d, 0x04, 0x00, 0x21, 'v', 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0);
  BAD(0x21, 'v');                              /* not a table */
  BAD(0x0c, 0x04, 0x21, 'v', 0x00, 0x21, 't'); /* time not a number */
  BAD(0x0c, 0x04, 0x21, 'v', 0x00, 0x00);      /* time nil */
  BAD(0x0c, 0x04, 0x21, 'v', 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0x00);
  BAD(0x08, 0x00);                               /* trailing bytes */
  BAD(0x0c, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00); /* huge count */
  BAD(0x0c, 0xff, 0x01, 0x00, 0x00, 0x80);       /* count, no data */
  BAD(0x0c, 0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0,
      0);                                                    /* huge string */
  BAD(0x0c, 0x04, 0x03, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0); /* lightud */
  BAD(0x0c, 0x04, 0x0e, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0); /* dict */
  BAD(0x0c, 0x04, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0,
      0); /* int64 cdata */
  BAD(0x0c, 0x04, 0x09, 0x01, 0x00, 0x02, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0,
      0); /* nil table key */
  BAD(0x0c, 0x04, 0x0c, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x07, 0, 0, 0, 0, 0,
      0, 0, 0); /* huge inner array */

  BAD_LINE(0x07, 0, 0, 0);
  BAD_LINE(0x06, 0, 0);
  BAD_LINE(0x22, 'a');
  BAD_LINE(0xe0);
  BAD_LINE(0xff, 0x22, 0, 0);
  BAD_LINE(0x03);
  BAD_LINE(0x0f, 0x00);
  BAD_LINE(0x09, 0x01, 0x00, 0x02); /* nil key */
  BAD_LINE(0x09, 0x01, 0x21, 'a');  /* missing value */
  BAD_LINE(0x0c, 0x03, 0x02);       /* missing slot */
  BAD_LINE(0x0c, 0x03, 0x00);       /* missing slot after a hole */
  BAD_LINE(0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02);
  BAD_LINE(0x09, 0x01, 0x08, 0x21); /* table key, cut value */
  sl_buf_t out;
  sl_buf_init(&out);
  CHECK_EQ_INT(sl_codec_line(&out, NULL, NULL), -1);
  static const uint8_t one[] = {0x02};
  CHECK_EQ_INT(sl_codec_line(&out, one, one), -1); /* empty span */
  sl_buf_free(&out);
}

/* Nesting: LuaJIT encodes up to 100 tables deep; so do we, no deeper. */
static void test_depth(void) {
  uint8_t buf[300];
  sl_buf_t out;
  sl_buf_init(&out);
  for (int d = 99; d <= 101; d++) {
    size_t n = 0;
    for (int i = 0; i < d - 1; i++) {
      buf[n++] = 0x0c; /* {{...}} */
      buf[n++] = 0x02;
    }
    buf[n++] = 0x08;
    out.len = 0;
    CHECK_EQ_INT(sl_codec_line(&out, buf, buf + n), d <= 100 ? 0 : -1);
    /* the same value inside a one-record batch */
    uint8_t batch[320] = {0x0c, 0x04};
    memcpy(batch + 2, buf, n);
    batch[2 + n] = 0x00;
    batch[3 + n] = 0x07;
    memset(batch + 4 + n, 0, 8);
    sl_codec_reader_t r;
    sl_codec_record_t rec;
    CHECK_EQ_INT(sl_codec_reader_init(&r, batch, n + 12), 0);
    CHECK_EQ_INT(sl_codec_reader_next(&r, &rec), d <= 100 ? 1 : -1);
  }
  /* what LuaJIT writes at its limit we can read */
  bytes_t b =
      lua_enc("(function() local t = {} local c = t "
              "for i = 1, 99 do c[1] = {} c = c[1] end return t end)()");
  out.len = 0;
  CHECK_EQ_INT(sl_codec_line(&out, b.p, b.p + b.n), 0);
  free(b.p);
  /* a very deep hostile input stops at the limit */
  size_t big = 1 << 20;
  uint8_t *deep = malloc(big);
  CHECK(deep != NULL);
  for (size_t i = 0; i < big; i += 2) {
    deep[i] = 0x0c;
    deep[i + 1] = 0x02;
  }
  CHECK_EQ_INT(sl_codec_line(&out, deep, deep + big), -1);
  /* 100 levels of {child, nil}: each level written once, not 2^depth */
  size_t n = 0;
  for (int i = 0; i < 99; i++) {
    buf[n++] = 0x0c;
    buf[n++] = 0x03;
  }
  buf[n++] = 0x08;
  for (int i = 0; i < 99; i++)
    buf[n++] = 0x00;
  out.len = 0;
  CHECK_EQ_INT(sl_codec_line(&out, buf, buf + n), 0);
  CHECK(out.len < 1000);
  /* 100 levels of table keys: refused, not 2^depth backslashes */
  n = 0;
  for (int i = 0; i < 99; i++) {
    deep[n++] = 0x09; /* {[key] = true} */
    deep[n++] = 0x01;
  }
  deep[n++] = 0x08;
  for (int i = 0; i < 99; i++)
    deep[n++] = 0x02;
  out.len = 0;
  CHECK_EQ_INT(sl_codec_line(&out, deep, deep + n), -1);
  free(deep);
  sl_buf_free(&out);
}

/* Random bytes, and random mutations of valid batches, never crash. */
static void test_random(void) {
  bytes_t base = lua_enc("{ 'v', nil, 1, {a = {1, 2, {x = 'y'}}, [3] = true},"
                         "  'key', 2, {1, nil, 'z', k = {}}, 1.5, 3 }");
  uint64_t x = 0x9e3779b97f4a7c15ull;
  sl_buf_t out;
  sl_buf_init(&out);
  long ok = 0;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    size_t n;
    uint8_t *c;
    if (i & 1) { /* mutate a valid batch */
      n = base.n;
      c = malloc(n);
      CHECK(c != NULL);
      memcpy(c, base.p, n);
      for (int m = 0; m < 1 + (int)(x % 4); m++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c[x % n] = (uint8_t)(x >> 32);
      }
    } else { /* random bytes, biased to small tags */
      n = 1 + x % 64;
      c = malloc(n);
      CHECK(c != NULL);
      for (size_t j = 0; j < n; j++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c[j] = (x & 3) ? (uint8_t)(x >> 8) % 0x30 : (uint8_t)(x >> 8);
      }
      c[0] = (x & 8) ? 0x0c : c[0];
    }
    if (read_all(c, n, &out) == 0)
      ok++;
    out.len = 0;
    (void)sl_codec_line(&out, c, c + n);
    free(c);
  }
  CHECK(ok > 0); /* some mutations stay valid */
  sl_buf_free(&out);
  free(base.p);
}

int main(void) {
  L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  lua_run("buffer = require('string.buffer')\n"
          "function decode_check(s)\n"
          "  local a = buffer.decode(s)\n"
          "  local b = buffer.new():set(s):decode()\n"
          "  assert(#a == #b)\n"
          "  for i = 1, #a do assert(a[i] == b[i]) end\n"
          "  return a\n"
          "end\n");
  test_buf();
  test_writer_states();
  test_writer_matches_luajit();
  test_writer_fields();
  test_reader_luajit_batch();
  test_line_scalars();
  test_line_tables();
  test_line_numbers_vs_tostring();
  test_malformed();
  test_depth();
  test_random();
  lua_close(L);
  return CHECK_DONE();
}
