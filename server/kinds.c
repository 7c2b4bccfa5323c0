/* kinds.c - the registry of source and sink kinds (kinds.h).
 *
 * The only place that lists the kinds in C. Each kind's file exports one
 * vtable; its `kind` field is the name a conf uses.
 */
#include "kinds.h"

#include <string.h>

static const sl_source_vt_t *const SOURCES[] = {
    &sl_source_file_vt,      &sl_source_stdin_vt, &sl_source_tcp_vt,
    &sl_source_generator_vt, &sl_source_redis_vt,
};

static const sl_sink_vt_t *const SINKS[] = {
    &sl_sink_stdout_vt, &sl_sink_file_vt, &sl_sink_tcp_vt,
    &sl_sink_redis_vt,  &sl_sink_null_vt,
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const sl_source_vt_t *sl_kinds_source_at(int i) {
  return i >= 0 && i < COUNT(SOURCES) ? SOURCES[i] : NULL;
}

const sl_sink_vt_t *sl_kinds_sink_at(int i) {
  return i >= 0 && i < COUNT(SINKS) ? SINKS[i] : NULL;
}

const sl_source_vt_t *sl_kinds_source(const char *name) {
  for (int i = 0; name && i < COUNT(SOURCES); i++)
    if (!strcmp(SOURCES[i]->kind, name))
      return SOURCES[i];
  return NULL;
}

const sl_sink_vt_t *sl_kinds_sink(const char *name) {
  for (int i = 0; name && i < COUNT(SINKS); i++)
    if (!strcmp(SINKS[i]->kind, name))
      return SINKS[i];
  return NULL;
}

int sl_kinds_replayable(const sl_source_vt_t *vt) {
  return (vt->offset && vt->seek) || (vt->position && vt->seek_position);
}

int sl_kinds_committing(const sl_sink_vt_t *vt) {
  return vt->precommit && vt->commit && vt->restore;
}
