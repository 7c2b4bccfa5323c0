/* core.h - the running pipeline, shared by the files of the core.
 *
 * sl_core_t holds everything a running pipeline owns: the plan, the
 * channels, per-instance bookkeeping, the workers, the sources and sinks,
 * and the I/O thread's libuv loop and handles. It is created and destroyed
 * by pipeline.c on the main thread, which is also the I/O thread.
 *
 * Who touches what:
 *   - plan: read-only, every thread.
 *   - chans[c]: its producer thread pushes/drains, its consumer thread pops.
 *   - insts[g]: only the thread that hosts instance g (plan->insts[g].thread).
 *   - live, exit_code: atomics, any thread.
 *   - everything else: the I/O thread.
 */
#ifndef SL_CORE_H
#define SL_CORE_H

#include "channel.h"
#include "endpoint.h"
#include "histo.h"
#include "plan.h"

#include <stdatomic.h>
#include <uv.h>

typedef struct sl_worker_s sl_worker_t;

/* Barrier alignment of one instance (align.c), owned by its thread. */
typedef struct sl_align_s {
  uint64_t id;        /* barrier being aligned; 0 = none */
  uint64_t forwarded; /* the last barrier this instance passed on */
  uint8_t *in_state;  /* per in-channel: SL_IN_OPEN, _ARRIVED, _ENDED */
  int chained_arrived, chained_ended;
} sl_align_t;

enum { SL_IN_OPEN = 0, SL_IN_ARRIVED = 1, SL_IN_ENDED = 2 };

/* Per-instance state, owned by the instance's thread. */
typedef struct sl_inst_rt_s {
  sl_align_t align;
  int open_inputs; /* END markers still to come */
  int closing;     /* every END so far said the input ended */
  int ended;
  sl_source_t *source; /* thread 0 instances */
  sl_sink_t *sink;
  uint64_t records_in, records_out, batches_in;
  /* Operators: the Lua side's counts, published by the worker (relaxed
   * stores after its pumps) for the admin server to read on any thread. */
  _Atomic uint64_t pub_in, pub_out, pub_errors, pub_dead;
  /* Operators and sinks, written by the owning thread per batch taken from
   * a channel, read by the admin server: latency = from the batch's
   * creation by its producer to the end of its processing here, once per
   * record; busy_ns = time spent processing such batches. */
  sl_histo_t latency;
  _Atomic uint64_t busy_ns;
} sl_inst_rt_t;

typedef struct sl_core_s {
  sl_plan_t *plan;
  sl_channel_t *chans;
  sl_inst_rt_t *insts;
  sl_worker_t **workers; /* [1..workers]; [0] unused */
  uv_loop_t loop;        /* the I/O thread's */
  uv_async_t wake;
  uv_idle_t idle;
  uv_signal_t sigint, sigterm;
  uv_timer_t flush_timer, deadline;
  sl_source_t *sources; /* one per source node, by gid order */
  sl_sink_t *sinks;
  int n_sources, n_sinks;
  void *source_cores, *sink_cores; /* source.c's and sink.c's own state */
  atomic_int live;      /* operator instances + sinks not yet finished */
  atomic_int exit_code; /* first failure wins; 0 = none */
  int stopping;         /* a signal or on_error = "stop": draining */
  int force;            /* a second signal or the deadline: no more draining */
  int shutting_down;    /* handles are being closed */
  int started_workers;
  int exact;                        /* exactly_once: barriers are aligned */
  struct sl_coord_s *coord;         /* checkpoint.c; NULL without checkpoints */
  struct sl_confwatch_s *confwatch; /* confwatch.c */
  struct sl_progress_s *progress;   /* progress.c: the tty status line */
  sl_plan_t *next_plan;             /* a valid changed conf: run it next */
  atomic_int savepoint;     /* stopping to restart: take the savepoint */
  int workers_override;     /* --workers, for a reloaded conf */
  struct sl_watch_s *watch; /* watch.c: script hot reload */
  uint64_t reloads_ok, reloads_failed; /* script reloads (I/O thread) */
  /* conf reloads: counted by confwatch.c, kept by sl_run across runs */
  struct sl_conf_reloads_s *conf_reloads;
  struct sl_admin_s *admin; /* admin.c: the HTTP server, or NULL */
  double started_ms;        /* when this run started serving */
  /* the restore, on a work thread (pipeline.c): while `restoring`, only
   * the admin API runs, and it must not touch the coordinator */
  int restoring, restore_rc, nothing_to_run;
  const char *restore_arg;
  uv_work_t restore_req;
} sl_core_t;

typedef struct sl_conf_reloads_s {
  uint64_t ok;     /* valid changes: the pipeline restarted with them */
  uint64_t failed; /* invalid changes: logged, the pipeline carried on */
} sl_conf_reloads_t;

/* I/O thread: stop the sources and drain, to restart with c->next_plan. */
void sl_core_restart(sl_core_t *c, const char *why);
/* The wake handle of thread t (0 = I/O). */
uv_async_t *sl_core_wake_of(sl_core_t *c, int thread);
/* Records a failure (first code wins) and wakes the I/O thread. Any thread. */
void sl_core_fail(sl_core_t *c, int code);
/* An operator instance or a sink finished. Any thread. */
void sl_core_done(sl_core_t *c);
/* Pushes a copy of bytes on channel cid as a new batch. 0 ok, -1 OOM. */
int sl_core_send(sl_core_t *c, int cid, uint32_t kind, const void *data,
                 size_t len, uint32_t nrec, uint32_t closing);
/* Pushes a marker batch (no records) of `kind` on every out channel of
 * instance gid: a checkpoint barrier `id`, or END with `closing`. Fails the
 * pipeline on OOM. The producing thread of gid. */
void sl_core_mark(sl_core_t *c, int gid, uint32_t kind, uint64_t id,
                  uint32_t closing);
/* Is any channel that instance gid's output can reach parked in overflow? */
int sl_core_blocked(sl_core_t *c, int gid);
/* Producer side: drains the overflow of every out channel of gid. */
void sl_core_drain(sl_core_t *c, int gid);

/* ---- align.c: barrier alignment (the instance's thread) ---- */
int sl_align_init(sl_core_t *c); /* allocates in_state arrays; 0 ok */
void sl_align_free(sl_core_t *c);
/* A barrier arrived on input in_index (-1: from a chained upstream).
 * Returns 1 when the instance now has barrier `id` from every input: the
 * caller snapshots, forwards the barrier, then calls sl_align_done. */
int sl_align_barrier(sl_core_t *c, int gid, int in_index, uint64_t id);
/* Input in_index (-1: chained) ended; 1 if that completes an alignment. */
int sl_align_end(sl_core_t *c, int gid, int in_index);
void sl_align_done(sl_core_t *c, int gid);
/* May input in_index be read now? (exactly_once: not after its barrier.) */
int sl_align_may_read(sl_core_t *c, int gid, int in_index);
/* Must gid wait? (a chained instance below it is still aligning a barrier
 * that gid already passed on) */
int sl_align_held(sl_core_t *c, int gid);

/* ---- source.c: the core side of sources (I/O thread) ---- */
int sl_core_sources_create(sl_core_t *c);
void sl_core_sources_pump(sl_core_t *c); /* drain overflows, resume */
void sl_core_sources_stop(sl_core_t *c);
void sl_core_sources_close(sl_core_t *c); /* starts closing handles */
void sl_core_sources_free(sl_core_t *c);  /* after the loop ended */

/* ---- sink.c: the core side of sinks (I/O thread) ---- */
/* Allocates the sinks and brings each committing one back to the restored
 * checkpoint (file truncation, a Redis commit script: blocking). Runs on
 * the restore's work thread, before sl_core_sinks_start (I/O thread). */
int sl_core_sinks_create(sl_core_t *c);
int sl_core_sinks_start(sl_core_t *c);
int sl_core_sinks_pump(sl_core_t *c); /* 1 if it did work */
void sl_core_sinks_flush(sl_core_t *c);
void sl_core_sinks_close(sl_core_t *c);
void sl_core_sinks_free(sl_core_t *c);

#endif
