/* settings.c - a source's or sink's settings (settings.h).
 *
 * A small array searched by name: a node has about ten settings, and kinds
 * read them once, at start.
 */
#include "settings.h"

#include <stdlib.h>
#include <string.h>

static const sl_setting_t *find(const sl_node_cfg_t *c, const char *name) {
  for (int i = 0; i < c->n_settings; i++)
    if (!strcmp(c->settings[i].name, name))
      return &c->settings[i];
  return NULL;
}

const char *sl_cfg_str(const sl_node_cfg_t *c, const char *name) {
  const sl_setting_t *s = find(c, name);
  return s && s->type == SL_SETTING_STR ? s->str : NULL;
}

double sl_cfg_num(const sl_node_cfg_t *c, const char *name, double dflt) {
  const sl_setting_t *s = find(c, name);
  return s && s->type == SL_SETTING_NUM ? s->num : dflt;
}

int sl_cfg_bool(const sl_node_cfg_t *c, const char *name) {
  const sl_setting_t *s = find(c, name);
  return s && s->type == SL_SETTING_BOOL && s->num != 0;
}

/* The slot for `name`: the existing one (its string freed) or a new one. */
static sl_setting_t *slot(sl_node_cfg_t *c, const char *name) {
  sl_setting_t *s = (sl_setting_t *)find(c, name);
  if (s) {
    free(s->str);
    s->str = NULL;
    return s;
  }
  sl_setting_t *grown =
      realloc(c->settings, (size_t)(c->n_settings + 1) * sizeof *grown);
  if (!grown)
    return NULL;
  c->settings = grown;
  s = &grown[c->n_settings];
  memset(s, 0, sizeof *s);
  s->name = strdup(name);
  if (!s->name)
    return NULL;
  c->n_settings++;
  return s;
}

/* name, kind and pipeline follow their settings (the array may move, the
 * strings do not). */
static void refresh(sl_node_cfg_t *c, const char *name, const char *v) {
  if (!strcmp(name, "name"))
    c->name = v;
  else if (!strcmp(name, "kind"))
    c->kind = v;
  else if (!strcmp(name, "pipeline"))
    c->pipeline = v;
}

int sl_cfg_set_str(sl_node_cfg_t *c, const char *name, const char *v) {
  char *copy = strdup(v);
  sl_setting_t *s = copy ? slot(c, name) : NULL;
  if (!s) {
    free(copy);
    return -1;
  }
  s->type = SL_SETTING_STR;
  s->str = copy;
  refresh(c, name, copy);
  return 0;
}

int sl_cfg_set_num(sl_node_cfg_t *c, const char *name, double v) {
  sl_setting_t *s = slot(c, name);
  if (!s)
    return -1;
  s->type = SL_SETTING_NUM;
  s->num = v;
  return 0;
}

int sl_cfg_set_bool(sl_node_cfg_t *c, const char *name, int v) {
  sl_setting_t *s = slot(c, name);
  if (!s)
    return -1;
  s->type = SL_SETTING_BOOL;
  s->num = v != 0;
  return 0;
}

void sl_cfg_free(sl_node_cfg_t *c) {
  for (int i = 0; i < c->n_settings; i++) {
    refresh(c, c->settings[i].name, NULL);
    free(c->settings[i].name);
    free(c->settings[i].str);
  }
  free(c->settings);
  c->settings = NULL;
  c->n_settings = 0;
}
