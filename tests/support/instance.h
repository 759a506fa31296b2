/*
 * instance.h: the instance fixture: run test applications (tests/apps/) and
 * the sluice binary itself as separate processes, so tests can kill -9
 * them, restart them on the same state directory and ask them over HTTP
 * whether they are ready; and the work directory that holds their state.
 *
 * Everything here runs on the test's thread; the functions that start or
 * wait fail the running cmocka test when they say so.
 */
#ifndef SLUICE_TEST_INSTANCE_H
#define SLUICE_TEST_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "connectors/http/auth/jwt.h"

typedef struct test_instance {
    char app[64];        /* tests/apps/<app> */
    char state_dir[256]; /* its own state.dir */
    char log_path[300];  /* stderr of every incarnation, appended */
    char secret_path[300]; /* <work_dir>/cluster-secret, shared by its instances */
    int http_port;         /* the public API */
    int admin_port;        /* /metrics, /v1/members, /v1/metadata (a sluice `run`) */
    char args[64][256]; /* argv after the program name (copies) */
    int n_args;
    pid_t pid; /* 0 when not running */
    int restarts;
} test_instance;

/* Prepare (not start) an instance of tests/apps/<app> with a fresh state
 * dir under `work_dir`, a free HTTP port and the given arguments (copied;
 * NULL-terminated). Every instance of one work dir shares one cluster
 * secret (<work_dir>/cluster-secret, created by the first; passed as
 * cluster.secret.file), as the instances of one real cluster must. */
void test_instance_init(test_instance *inst, const char *app, const char *work_dir,
                        const char *name, const char *const *args);

/* Prepare an instance of the sluice binary (<build>/sluice) running
 * `command` (NULL-terminated words such as {"sink", "rebuild", NULL}; NULL:
 * the default, `run`) with bootstrap.servers set to the harness's broker;
 * add settings with test_instance_set. */
void test_instance_init_sluice(test_instance *inst, const char *work_dir, const char *name,
                               const char *const *command);

/* Append "--set" and the printf-formatted "key=value" to the arguments. */
void test_instance_set(test_instance *inst, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Set what makes fail-over quick after a kill -9: a 6 s session timeout
 * (the group waits that long for a dead member), 500 ms heartbeats and
 * 500 ms broker health checks. */
void test_instance_set_fast_failover(test_instance *inst);

/* Start it (fork + exec). Fails the test if it cannot. */
void test_instance_start(test_instance *inst);

/* Wait until GET /readyz answers 200, at most timeout_ms. */
bool test_instance_wait_ready(test_instance *inst, int timeout_ms);

/* Start it and wait until it is ready; else print the end of its log and
 * fail the test, naming it `what`. */
void test_instance_start_ready(test_instance *inst, int timeout_ms, const char *what);

/* Start `a` and `b` at once and wait until both are ready; else print the
 * end of both logs and fail the test. */
void test_instance_start_both(test_instance *a, test_instance *b, int timeout_ms);

/* For a file's setup: start the `n` instances one after the other, each
 * ready before the next starts, then wait until all are ready again (a
 * rebalance follows each join). False, after printing the end of the log
 * of the one that was not ready, if one was not. */
bool test_instances_start_ready(test_instance *insts, int n, int timeout_ms);

/* For a file's teardown: stop every running instance (SIGTERM, at most
 * timeout_ms), print the end of the log of each that did not exit 0, and
 * free them all. Returns -1 if one did not exit 0 (a leak or a crash on
 * shutdown fails the file), else 0. */
int test_instances_stop(test_instance *insts, int n, int timeout_ms);

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

/* A file's cluster: `n` sluice processes (the binary, `run`) that share one
 * application id and one topic prefix for the whole file, started by the
 * group setup and stopped by the teardown. */
#define TEST_CLUSTER_MAX 3
typedef struct test_cluster {
    char work_dir[64];
    char app_id[96];
    char prefix[112]; /* "<app_id>." */
    test_instance instances[TEST_CLUSTER_MAX];
    int n;
    bool started;            /* false: no broker, or the setup failed; the tests skip */
    sl_jwt_keys *keys;       /* the instances' signing key (test_cluster_sign) */
    sl_jwt_keys *other_keys; /* a key they do not trust, to forge tokens */
} test_cluster;

/* Prepare (not start) a cluster: a work directory /tmp/sluice-<name>-XXXXXX,
 * a unique application id "<name>-..." and `n` (at most TEST_CLUSTER_MAX)
 * instances "a", "b", "c" with application.id, identity.topic.prefix and
 * quick fail-over set (add more with test_instance_set). 0 or -1. */
int test_cluster_init(test_cluster *cluster, const char *name, int n);

/* Generate the cluster's signing key (keys) and another one (other_keys)
 * in its work directory and give every instance identity.key.file. 0 or
 * -1. */
int test_cluster_sign(test_cluster *cluster);

/* Start every instance (see test_instances_start_ready); 0, or -1 when one
 * was not ready. */
int test_cluster_start(test_cluster *cluster);

/* Free the keys, stop every instance (see test_instances_stop) and remove
 * the work directory; -1, keeping the directory, if one did not exit 0.
 * Nothing more to do (0) if the cluster was not started. */
int test_cluster_stop(test_cluster *cluster);

/* Make a fresh work directory /tmp/<name>-XXXXXX into `dir`; 0 or -1. */
int test_work_dir_make(char *dir, size_t size, const char *name);

/* Remove the work directory (nothing if `dir` is empty) unless
 * SLUICE_TEST_KEEP is set, to look at it after a failure. */
void test_work_dir_remove(const char *dir);

/* A free loopback TCP port (bind to 0, then close). */
int test_free_port(void);

#endif
