/* main.c - the `sluice` command: parses the command line, calls the library.
 *
 *   sluice run PIPELINE.conf [--workers N] [--restore latest|none|ID]
 *                            [--log-level LEVEL]
 *   sluice check PIPELINE.conf
 *   sluice test [SPEC...]
 *   sluice version
 */
#include "log.h"
#include "luastate.h"
#include "sluice.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: sluice run PIPELINE.conf [--workers N] [--restore latest|none|ID]\n"
    "                  [--log-level LEVEL] [--log-format text|json]\n"
    "       sluice check PIPELINE.conf\n"
    "       sluice test [SPEC...]\n"
    "       sluice version\n"
    "       sluice help | --help | COMMAND --help\n";

static const char HELP[] =
    "\n"
    "commands:\n"
    "  run      load the conf, run the pipeline until its bounded sources are\n"
    "           drained (exit 0) or SIGINT/SIGTERM (drain, final checkpoint,\n"
    "           exit 0)\n"
    "  check    validate the conf and compile every script; exit 0, or print\n"
    "           FILE:LINE: message lines and exit 1\n"
    "  test     run Busted specs under LuaJIT with sluice.testing on the path\n"
    "  version  print the version\n"
    "\n"
    "run options:\n"
    "  --workers N             worker threads (default: the conf's, else "
    "cores)\n"
    "  --restore latest|none|ID  with a checkpoint block: resume from the\n"
    "                          newest checkpoint (default), start empty, or\n"
    "                          resume from checkpoint ID\n"
    "  --log-level LEVEL       debug, info (default), warn or error\n"
    "  --log-format text|json  log lines on stderr (default text)\n"
    "\n"
    "exit codes: 0 ok, 1 bad conf or command line, 3 runtime failure,\n"
    "4 an operator with on_error = \"stop\" failed, 5 Redis unreachable.\n"
    "Docs: README.md and docs/ in the source tree.\n";

/* Bad command line: the usage on stderr, exit 1. */
static int usage(void) {
  fputs(USAGE, stderr);
  return SL_EXIT_CONF;
}

/* Asked for: the usage and the help on stdout, exit 0. */
static int help(void) {
  fputs(USAGE, stdout);
  fputs(HELP, stdout);
  return SL_EXIT_OK;
}

static int is_help(const char *a) {
  return !strcmp(a, "--help") || !strcmp(a, "-h") || !strcmp(a, "help");
}

/* Parses the flags after the conf path; -1 on a bad one. */
static int parse_flags(int argc, char **argv, sl_options_t *o) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--workers") && v) {
      char *end;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 1024) {
        fprintf(stderr, "sluice: --workers wants a number from 1 to 1024\n");
        return -1;
      }
      o->workers = (int)n;
      i++;
    } else if (!strcmp(a, "--restore") && v) {
      o->restore = v;
      i++;
    } else if (!strcmp(a, "--log-format") && v) {
      if (strcmp(v, "text") && strcmp(v, "json")) {
        fprintf(stderr, "sluice: --log-format: text or json\n");
        return -1;
      }
      sl_log_set_json(!strcmp(v, "json"));
      i++;
    } else if (!strcmp(a, "--log-level") && v) {
      int l = sl_log_level_from_name(v);
      if (l < 0) {
        fprintf(stderr, "sluice: --log-level: debug, info, warn or error\n");
        return -1;
      }
      sl_log_set_level(l);
      i++;
    } else {
      fprintf(stderr, "sluice: unknown option '%s'\n", a);
      return -1;
    }
  }
  return 0;
}

/* `sluice test`: Busted under LuaJIT with the harness on the path. */
static int run_tests(int argc, char **argv) {
  const char *dir = sl_lua_dir();
  const char *old_path = getenv("LUA_PATH");
  const char *old_cpath = getenv("LUA_CPATH");
  size_t n = strlen(dir) * 2 + (old_path ? strlen(old_path) : 0) + 64;
  char *path = malloc(n), *cpath = malloc(n);
  char **args = calloc((size_t)argc + 3, sizeof *args);
  if (!path || !cpath || !args) {
    fprintf(stderr, "sluice: out of memory\n");
    return SL_EXIT_RUNTIME;
  }
  snprintf(path, n, "%s/?.lua;%s/?/init.lua;%s", dir, dir,
           old_path ? old_path : ";");
  snprintf(cpath, n, "%s/?.so;%s", dir, old_cpath ? old_cpath : ";");
  setenv("LUA_PATH", path, 1);
  setenv("LUA_CPATH", cpath, 1);
  args[0] = "busted";
  args[1] = "--lua=luajit";
  for (int i = 0; i < argc; i++)
    args[i + 2] = argv[i];
  execvp("busted", args);
  perror("sluice: cannot run busted (apt-get install lua-busted)");
  return SL_EXIT_RUNTIME;
}

/* A write to a closed pipe or socket must be an error, not a death; and
 * fds 0-2 must be taken, or libuv's own fds would land on them. */
static void prepare_process(void) {
  signal(SIGPIPE, SIG_IGN);
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
      return;
}

int main(int argc, char **argv) {
  prepare_process();
  if (argc < 2)
    return usage();
  const char *cmd = argv[1];
  if (is_help(cmd))
    return help();
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    printf("sluice %s\n", sl_version());
    return SL_EXIT_OK;
  }
  if (!strcmp(cmd, "test"))
    return run_tests(argc - 2, argv + 2);
  if ((strcmp(cmd, "run") && strcmp(cmd, "check")) || argc < 3)
    return argc >= 3 && is_help(argv[2]) ? help() : usage();
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
      return help();
  sl_options_t o = {.conf_path = argv[2], .workers = 0};
  if (parse_flags(argc - 3, argv + 3, &o))
    return usage();
  return !strcmp(cmd, "run") ? sl_run(&o) : sl_check(&o);
}
