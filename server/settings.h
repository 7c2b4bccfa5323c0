/* settings.h - a source's or sink's settings, as the conf gave them.
 *
 * The conf (bindings/sluice/kinds.lua) validates each kind's fields; the
 * plan carries them to C as plain name -> value pairs (strings, numbers,
 * booleans), and plan.c copies every such field of a source or sink node
 * into an sl_node_cfg_t. A kind reads the ones it knows by name when it
 * starts (sl_cfg_str(cfg, "path")) and keeps them in its own state, so a
 * new kind's fields touch only its own file and its registry entries.
 *
 * Read-only once the plan is built (any thread may read); written by
 * plan.c at start-up and by C unit tests that make a sink by hand.
 */
#ifndef SL_SETTINGS_H
#define SL_SETTINGS_H

#include <stddef.h>

typedef enum {
  SL_SETTING_STR,
  SL_SETTING_NUM,
  SL_SETTING_BOOL
} sl_setting_type_t;

typedef struct sl_setting_s {
  char *name;
  sl_setting_type_t type;
  char *str;  /* SL_SETTING_STR: owned */
  double num; /* SL_SETTING_NUM, and BOOL as 0/1 */
} sl_setting_t;

/* Settings of one source or sink. name, kind and pipeline point into the
 * settings (or, in hand-made test configs, to the caller's strings). */
typedef struct sl_node_cfg_s {
  const char *name;     /* the declaration's name */
  const char *kind;     /* "file", "tcp", ...: a name in kinds.c */
  const char *pipeline; /* the pipeline's name */
  int exactly_once;  /* sinks: stage records until their checkpoint commits */
  int checkpointing; /* sinks: checkpoints are taken (precommit is called) */
  sl_setting_t *settings; /* owned; every field of the node */
  int n_settings;
} sl_node_cfg_t;

/* The string setting `name`, or NULL when absent or not a string. */
const char *sl_cfg_str(const sl_node_cfg_t *c, const char *name);
/* The number setting `name`, or dflt when absent or not a number. */
double sl_cfg_num(const sl_node_cfg_t *c, const char *name, double dflt);
/* The boolean setting `name` (0 when absent). */
int sl_cfg_bool(const sl_node_cfg_t *c, const char *name);

/* Adds or replaces a setting (copies name and value). 0 ok, -1 out of
 * memory. Setting "name", "kind" or "pipeline" also sets that field. */
int sl_cfg_set_str(sl_node_cfg_t *c, const char *name, const char *v);
int sl_cfg_set_num(sl_node_cfg_t *c, const char *name, double v);
int sl_cfg_set_bool(sl_node_cfg_t *c, const char *name, int v);
/* Frees every setting (not the struct). */
void sl_cfg_free(sl_node_cfg_t *c);

#endif
