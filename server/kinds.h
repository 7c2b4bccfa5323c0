/* kinds.h - the registry of source and sink kinds (C side).
 *
 * One table per side names every kind and its vtable (endpoint.h); what a
 * kind can guarantee is read off its vtable, never listed: a source is
 * replayable when it can report and seek a position (offset/seek or
 * position/seek_position), a sink commits when it has precommit. The Lua
 * side's registry is bindings/sluice/kinds.lua (fields, defaults, checks);
 * spec/c/test_kinds.c checks that the two name the same kinds with the
 * same guarantees. Adding a kind: its file (source_X.c / sink_X.c, one
 * exported vtable), a line here in kinds.c, an entry in kinds.lua.
 *
 * Constant data: any thread.
 */
#ifndef SL_KINDS_H
#define SL_KINDS_H

#include "endpoint.h"

/* The vtable of a kind by name, or NULL when there is no such kind. */
const sl_source_vt_t *sl_kinds_source(const char *name);
const sl_sink_vt_t *sl_kinds_sink(const char *name);

/* The i-th kind (0-based), or NULL past the last: for listing. */
const sl_source_vt_t *sl_kinds_source_at(int i);
const sl_sink_vt_t *sl_kinds_sink_at(int i);

/* What a kind can guarantee, read off its vtable. */
int sl_kinds_replayable(const sl_source_vt_t *vt);
int sl_kinds_committing(const sl_sink_vt_t *vt);

#endif
