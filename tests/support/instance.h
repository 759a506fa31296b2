/*
 * instance.h: run test applications (tests/apps/) as separate processes, so
 * tests can kill -9 them, restart them on the same state directory and ask
 * them over HTTP whether they are ready.
 */
#ifndef SLUICE_TEST_INSTANCE_H
#define SLUICE_TEST_INSTANCE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct test_instance {
    char app[64];        /* tests/apps/<app> */
    char state_dir[256]; /* its own state.dir */
    char log_path[300];  /* stderr of every incarnation, appended */
    int http_port;
    char args[48][256]; /* argv after the program name (copies) */
    int n_args;
    pid_t pid; /* 0 when not running */
    int restarts;
} test_instance;

/* Prepare (not start) an instance of tests/apps/<app> with a fresh state
 * dir under `work_dir`, a free HTTP port and the given arguments (copied;
 * NULL-terminated). */
void test_instance_init(test_instance *inst, const char *app, const char *work_dir,
                        const char *name, const char *const *args);

/* Start it (fork + exec). Fails the test if it cannot. */
void test_instance_start(test_instance *inst);

/* Wait until GET /readyz answers 200, at most timeout_ms. */
bool test_instance_wait_ready(test_instance *inst, int timeout_ms);

/* SIGKILL and reap. */
void test_instance_kill9(test_instance *inst);

/* SIGTERM, wait at most timeout_ms for a clean exit; returns the exit
 * status (or -1 if it had to be killed). */
int test_instance_stop(test_instance *inst, int timeout_ms);

/* GET /readyz and return the value of the integer field `name` of its
 * "engine" object, or -1. */
long long test_instance_engine_stat(test_instance *inst, const char *name);

/* Print the last lines of the instance's log to stderr (for failures). */
void test_instance_dump_log(const test_instance *inst, int lines);

/* Kill it if it still runs (a failed test leaves nothing behind). */
void test_instance_free(test_instance *inst);

/* A free loopback TCP port (bind to 0, then close). */
int test_free_port(void);

#endif
