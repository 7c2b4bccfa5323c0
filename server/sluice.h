/* sluice.h - the library's public surface: what `sluice` (main.c) calls.
 *
 * The whole server is a library; main.c only parses the command line.
 */
#ifndef SLUICE_H
#define SLUICE_H

/* Exit codes of `sluice run` / `sluice check`. */
enum {
  SL_EXIT_OK = 0,
  SL_EXIT_CONF = 1,    /* bad conf or command line */
  SL_EXIT_RUNTIME = 3, /* I/O error, a script failing open, ... */
  SL_EXIT_STOPPED = 4, /* an operator with on_error = "stop" hit an error */
  SL_EXIT_REDIS = 5    /* Redis unreachable past its timeout */
};

typedef struct sl_options_s {
  const char *conf_path;
  int workers;         /* > 0 overrides the conf */
  const char *restore; /* "latest" (NULL), "none" or a checkpoint id */
} sl_options_t;

/* Validates the conf and compiles its scripts; prints "FILE:LINE: message"
 * lines on stderr. Returns an exit code. */
int sl_check(const sl_options_t *opts);
/* Runs the pipeline until its sources drain, a signal stops it, or it fails.
 * Returns an exit code. */
int sl_run(const sl_options_t *opts);
const char *sl_version(void);

#endif
