/* test_conf.c - conf validation and planning through the C entry point
 * (sl_plan_load), as `sluice check` and `sluice run` call it: every bad
 * conf gives "FILE:LINE: message" and no plan; a good one gives the planned
 * topology the core runs. Needs SLUICE_LUA_DIR (set by CTest).
 */
#include "check.h"
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/sluice_test_conf_XXXXXX";

static const char *write_conf(const char *name, const char *text) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
  return path;
}

/* Loads text; expects failure with an error line starting "PATH:LINE:". */
static void expect_error(const char *text, int line, const char *needle) {
  const char *path = write_conf("bad.conf", text);
  char want[300];
  snprintf(want, sizeof want, "%s:%d: ", path, line);
  sl_plan_t *p = NULL;
  char *errors = NULL;
  int rc = sl_plan_load(path, 0, &p, &errors);
  CHECK_EQ_INT(rc, 1);
  CHECK(p == NULL);
  CHECK(errors != NULL);
  if (!strstr(errors, want) || !strstr(errors, needle))
    CHECK_FAIL_("want '%s...%s' in:\n%s", want, needle, errors);
  free(errors);
}

static const char *src = "source \"in\" { kind = \"generator\", count = 3 }\n";

static void test_errors(void) {
  char buf[1024];
  snprintf(buf, sizeof buf,
           "%ssink \"out\" { kind = \"stdout\", from = \"in\",\n"
           "  colour = 1 }\n",
           src);
  expect_error(buf, 3, "colour");
  expect_error("source \"in\" { kind = \"kafka\" }\n", 1, "kafka");
  snprintf(buf, sizeof buf,
           "%ssink \"out\" { kind = \"stdout\", from = \"nope\" }\n", src);
  expect_error(buf, 2, "nope");
  snprintf(buf, sizeof buf, "%ssource \"in\" { kind = \"stdin\" }\n", src);
  expect_error(buf, 2, "in");
  snprintf(buf, sizeof buf,
           "%soperator \"a\" { script = \"x.lua\", from = \"in\",\n"
           "  parallelism = \"two\" }\n",
           src);
  write_conf("x.lua",
             "local op = {}\nfunction op.process(ctx, v) end\nreturn op\n");
  expect_error(buf, 3, "parallelism");
  write_conf("broken.lua", "local op = {}\nfunction op.process(ctx, v)\n  if "
                           "then\nend\nreturn op\n");
  snprintf(buf, sizeof buf,
           "%soperator \"a\" { script = \"broken.lua\", from = \"in\" }\n"
           "sink \"out\" { kind = \"stdout\", from = \"a\" }\n",
           src);
  const char *path = write_conf("bad.conf", buf);
  sl_plan_t *p = NULL;
  char *errors = NULL;
  CHECK_EQ_INT(sl_plan_load(path, 0, &p, &errors), 1);
  char want[300];
  snprintf(want, sizeof want, "%s/broken.lua:3:", dir);
  if (!strstr(errors, want))
    CHECK_FAIL_("want '%s' in:\n%s", want, errors);
  free(errors);
}

static void test_cycle(void) {
  write_conf("x.lua",
             "local op = {}\nfunction op.process(ctx, v) end\nreturn op\n");
  char buf[1024];
  snprintf(buf, sizeof buf,
           "%soperator \"a\" { script = \"x.lua\", from = {\"in\", \"b\"} }\n"
           "operator \"b\" { script = \"x.lua\", from = \"a\" }\n"
           "sink \"out\" { kind = \"stdout\", from = \"b\" }\n",
           src);
  const char *path = write_conf("cycle.conf", buf);
  sl_plan_t *p = NULL;
  char *errors = NULL;
  CHECK_EQ_INT(sl_plan_load(path, 0, &p, &errors), 1);
  CHECK(strstr(errors, "cycle") != NULL);
  free(errors);
}

/* in -> split(p=2) -key-> count(p=3) -> out, 2 workers. */
static void test_plan(void) {
  write_conf("x.lua",
             "local op = {}\nfunction op.process(ctx, v) end\nreturn op\n");
  char buf[1024];
  snprintf(buf, sizeof buf,
           "pipeline \"t\" { workers = 2 }\n%s"
           "operator \"split\" { script = \"x.lua\", from = \"in\", "
           "parallelism = 2 }\n"
           "operator \"count\" { script = \"x.lua\", from = \"split\", "
           "grouping = \"key\",\n"
           "  parallelism = 3 }\n"
           "sink \"out\" { kind = \"stdout\", from = \"count\" }\n",
           src);
  const char *path = write_conf("good.conf", buf);
  sl_plan_t *p = NULL;
  char *errors = NULL;
  int rc = sl_plan_load(path, 0, &p, &errors);
  if (rc)
    CHECK_FAIL_("load failed: %s", errors);
  CHECK_EQ_INT(p->workers, 2);
  CHECK_EQ_INT(p->threads, 3);
  CHECK_EQ_INT(p->n_nodes, 4);
  CHECK_EQ_INT(p->n_insts, 1 + 2 + 3 + 1);
  /* in->split: 2; split->count: 6 pairs, 3 across workers (the other 3 are
   * direct calls on one worker); count->out: 3 */
  CHECK_EQ_INT(p->n_chans, 8);
  int workers_used[3] = {0, 0, 0};
  for (int g = 0; g < p->n_insts; g++) {
    const sl_plan_inst_t *in = &p->insts[g];
    int type = p->nodes[in->node].type;
    if (type == SL_NODE_OPERATOR) {
      CHECK(in->thread >= 1 && in->thread <= 2);
      workers_used[in->thread]++;
    } else {
      CHECK_EQ_INT(in->thread, 0);
    }
    if (!strcmp(p->nodes[in->node].cfg.name, "count")) {
      CHECK(in->n_in_ch >= 0 && in->n_in_ch <= 2);
      CHECK_EQ_INT(in->n_inputs, 2); /* a channel or a direct call from each */
    }
    if (!strcmp(p->nodes[in->node].cfg.name, "split")) {
      CHECK_EQ_INT(in->n_outs, 1);
      CHECK_EQ_INT(in->outs[0].grouping, SL_GROUP_KEY);
      CHECK_EQ_INT(in->outs[0].n_ch + in->n_chained_to, 3);
    }
  }
  CHECK(workers_used[1] > 0 && workers_used[2] > 0);
  for (int c = 0; c < p->n_chans; c++) {
    CHECK_EQ_INT(p->chans[c].producer, p->insts[p->chans[c].from].thread);
    CHECK_EQ_INT(p->chans[c].consumer, p->insts[p->chans[c].to].thread);
  }
  CHECK(p->blob_len > 0);
  sl_plan_destroy(p);

  /* --workers overrides the conf */
  CHECK_EQ_INT(sl_plan_load(path, 1, &p, &errors), 0);
  CHECK_EQ_INT(p->workers, 1);
  sl_plan_destroy(p);
}

int main(void) {
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_errors();
  test_cycle();
  test_plan();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    return 1;
  return CHECK_DONE();
}
