/* sink_redis_cmd.c - the redis sink's commands: one per record.
 *
 * Per record (cfg: url, command, key; "{key}" in the key template is
 * replaced by the record's key; value and key as text via sl_codec_line, a
 * nil key as ""):
 *   xadd:    XADD KEY * v VALUE [k RECORDKEY]   (k only when there is a key)
 *   hset:    HSET KEY FIELD VALUE (FIELD: the `field` template, by default
 *            the record's key)
 *   set:     SET KEY VALUE
 *   publish: PUBLISH KEY VALUE
 *
 * A batch's commands are queued, each behind its u32 length, in one of two
 * encodings: RESP for the at_least_once pipeline (sink_redis.c), msgpack
 * arrays for exactly_once staging (sink_redis_eo.c, whose commit script
 * replays them). Also here: the names of the sink's own keys in Redis.
 */
#include "sink_redis_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_rsink_command(const char *s) {
  static const char *cmds[] = {"xadd", "hset", "set", "publish"};
  for (int i = 0; i < 4 && s; i++)
    if (!strcmp(s, cmds[i]))
      return i;
  return -1;
}

static int rs_put_u32(sl_buf_t *b, uint32_t v) {
  return sl_buf_append(b, &v, sizeof v);
}

/* RESP: one command of argc arguments. 0 ok, -1 OOM. */
int sl_rsink_resp(sl_buf_t *b, int argc, const char **argv,
                  const size_t *lens) {
  char head[32];
  int n = snprintf(head, sizeof head, "*%d\r\n", argc);
  if (sl_buf_append(b, head, (size_t)n) < 0)
    return -1;
  for (int i = 0; i < argc; i++) {
    n = snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
    if (sl_buf_append(b, head, (size_t)n) < 0 ||
        sl_buf_append(b, argv[i], lens[i]) < 0 ||
        sl_buf_append(b, "\r\n", 2) < 0)
      return -1;
  }
  return 0;
}

/* msgpack: an array of argc strings (what the commit script unpacks). */
int sl_rsink_msgpack(sl_buf_t *b, int argc, const char **argv,
                     const size_t *lens) {
  uint8_t h[5];
  h[0] = (uint8_t)(0x90 | argc); /* argc <= 7 */
  if (sl_buf_append(b, h, 1) < 0)
    return -1;
  for (int i = 0; i < argc; i++) {
    size_t n = lens[i], hl;
    if (n < 32) {
      h[0] = (uint8_t)(0xa0 | n);
      hl = 1;
    } else if (n < 256) {
      h[0] = 0xd9;
      h[1] = (uint8_t)n;
      hl = 2;
    } else if (n < 65536) {
      h[0] = 0xda;
      h[1] = (uint8_t)(n >> 8);
      h[2] = (uint8_t)n;
      hl = 3;
    } else {
      h[0] = 0xdb;
      h[1] = (uint8_t)(n >> 24);
      h[2] = (uint8_t)(n >> 16);
      h[3] = (uint8_t)(n >> 8);
      h[4] = (uint8_t)n;
      hl = 5;
    }
    if (sl_buf_append(b, h, hl) < 0 || sl_buf_append(b, argv[i], n) < 0)
      return -1;
  }
  return 0;
}

/* "PREFIX:PIPELINE:SINK:suffix" (malloc'd) or NULL. */
char *sl_rsink_key(const sl_rsink_t *l, const char *suffix) {
  const sl_node_cfg_t *c = l->k->cfg;
  const char *p = c->pipeline ? c->pipeline : "pipeline";
  size_t n =
      strlen(l->url.prefix) + strlen(p) + strlen(c->name) + strlen(suffix) + 4;
  char *s = malloc(n);
  if (s)
    snprintf(s, n, "%s:%s:%s:%s", l->url.prefix, p, c->name, suffix);
  return s;
}

/* The key template with every "{key}" replaced by key[0..kn). */
static int rs_expand(sl_buf_t *out, const char *tpl, const uint8_t *key,
                     size_t kn) {
  out->len = 0;
  for (const char *p = tpl; *p;) {
    const char *m = strstr(p, "{key}");
    size_t n = m ? (size_t)(m - p) : strlen(p);
    if (sl_buf_append(out, p, n) < 0)
      return -1;
    if (!m)
      break;
    if (sl_buf_append(out, key, kn) < 0)
      return -1;
    p = m + 5;
  }
  return 0;
}

/* Builds the command of one record into argv (which point into l's
 * scratch buffers). Returns argc, or -1 (malformed, or OOM). */
static int rs_build(sl_rsink_t *l, const sl_codec_record_t *rec,
                    const char **argv, size_t *lens) {
  static const char *names[] = {"XADD", "HSET", "SET", "PUBLISH"};
  int has_key = !(rec->key_end - rec->key == 1 && rec->key[0] == 0x00);
  l->tmp_v.len = l->tmp_k.len = 0;
  if (sl_codec_line(&l->tmp_v, rec->value, rec->value_end) < 0)
    return -1;
  if (has_key && sl_codec_line(&l->tmp_k, rec->key, rec->key_end) < 0)
    return -1;
  if (rs_expand(&l->tmp_key, l->key_tpl, l->tmp_k.data, l->tmp_k.len) < 0)
    return -1;
  /* sl_buf data may be NULL when empty: point at "" then */
  const char *v = l->tmp_v.len ? (const char *)l->tmp_v.data : "";
  const char *kk = l->tmp_k.len ? (const char *)l->tmp_k.data : "";
  const char *key = l->tmp_key.len ? (const char *)l->tmp_key.data : "";
  int argc = 0;
#define ARG(p, n) (argv[argc] = (p), lens[argc++] = (n))
  ARG(names[l->cmd], strlen(names[l->cmd]));
  ARG(key, l->tmp_key.len);
  switch (l->cmd) {
  case RS_XADD:
    ARG("*", 1);
    ARG("v", 1);
    ARG(v, l->tmp_v.len);
    if (has_key) {
      ARG("k", 1);
      ARG(kk, l->tmp_k.len);
    }
    break;
  case RS_HSET: /* the field: the record's key, or the field template */
    if (l->field_tpl) {
      if (rs_expand(&l->tmp_field, l->field_tpl, l->tmp_k.data, l->tmp_k.len) <
          0)
        return -1;
      ARG(l->tmp_field.len ? (const char *)l->tmp_field.data : "",
          l->tmp_field.len);
    } else {
      ARG(kk, l->tmp_k.len);
    }
    ARG(v, l->tmp_v.len);
    break;
  default:
    ARG(v, l->tmp_v.len);
  }
#undef ARG
  return argc;
}

/* Renders every record of r as one command, encoded by enc behind a u32
 * length, appended to q (counted in *count). 0 ok; -1 malformed batch; -2
 * out of memory (the sink has failed). */
int sl_rsink_queue(sl_rsink_t *l, sl_codec_reader_t *r, sl_buf_t *q,
                   size_t *count, sl_rsink_enc_fn enc) {
  sl_codec_record_t rec;
  const char *argv[8];
  size_t lens[8];
  int rc;
  while ((rc = sl_codec_reader_next(r, &rec)) == 1) {
    int argc = rs_build(l, &rec, argv, lens);
    if (argc < 0)
      return -1;
    size_t at = q->len;
    if (rs_put_u32(q, 0) < 0 || enc(q, argc, argv, lens) < 0) {
      q->len = at;
      sl_rsink_fail(l, "out of memory");
      return -2;
    }
    uint32_t n = (uint32_t)(q->len - at - sizeof n);
    memcpy(q->data + at, &n, sizeof n);
    (*count)++;
  }
  return rc < 0 ? -1 : 0;
}
