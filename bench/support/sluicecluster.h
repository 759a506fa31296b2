/*
 * sluicecluster.h: release-build `sluice run` instances (identity and
 * dialogs in one engine) on the harness's broker, and the Kafka and HTTP
 * calls the dialogs benchmarks drive them with (dialogs_bench.c,
 * cluster_bench.c).
 *
 * One bench_cluster is one application: an application.id, a topic prefix
 * derived from it, a signing key (also the cluster secret) and up to
 * BENCH_CLUSTER_MAX instances, each with its own HTTP port, state dir and
 * log in the caller's work directory. A new application.id per cluster
 * keeps runs of one benchmark from sharing topics or consumer groups.
 *
 * Programs' helpers, like benchutil: failures print one "bench:" line to
 * stderr. Single-threaded unless a function says otherwise.
 */
#ifndef SLUICE_BENCH_SLUICECLUSTER_H
#define SLUICE_BENCH_SLUICECLUSTER_H

#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "topology/dialogs/dialogs.h"

#define BENCH_CLUSTER_MAX 8

typedef struct bench_cluster {
    const char *bootstrap; /* borrowed */
    const char *build;     /* borrowed: the dir with the sluice binary */
    const char *dir;       /* borrowed: logs, state dirs */
    const char *key_path;  /* borrowed: signing key file, also the cluster secret */
    char app_id[64], prefix[80];
    char commands_topic[160], events_topic[160], users_topic[160];
    int n;
    int ports[BENCH_CLUSTER_MAX];
    int admin_ports[BENCH_CLUSTER_MAX]; /* /metrics, /v1/members, /v1/metadata */
    pid_t pids[BENCH_CLUSTER_MAX];
} bench_cluster;

/* The common start of a cluster benchmark run under scripts/harness as
 * `make <target>`: the broker's address into *bootstrap, stop signals
 * caught, SIGPIPE ignored, the temporary directory `dir` (a mkdtemp
 * template, rewritten) and an RS256 signing key in it (its path into
 * key_path). 0, or the exit status after printing why (2: no broker). */
int bench_cluster_setup(const char *target, char *dir, char *key_path, size_t key_path_size,
                        const char **bootstrap);

/* Fill `c` for application `app_id` (topic prefix "<app_id>."); nothing
 * runs yet. Every pointer is borrowed and must outlive `c`. */
void bench_cluster_init(bench_cluster *c, const char *bootstrap, const char *build, const char *dir,
                        const char *key_path, const char *app_id);

/* Start `n` instances (dialogs.topic.partitions = `partitions`, log level
 * warn, the given extra "name=value" settings, NULL-terminated or NULL)
 * and wait up to 180 s until each answers GET /readyz with 200. false
 * after printing why (the started instances keep running: stop them). */
bool bench_cluster_start(bench_cluster *c, int n, int partitions, const char *const *extra);

/* SIGTERM every instance and wait for each to exit. */
void bench_cluster_stop(bench_cluster *c);

/* One HTTP/1.1 request to 127.0.0.1:`port` with Connection: close; the
 * response (NUL-terminated, cut at out_size-1) in `out`, the status or -1.
 * `headers` are whole "Name: value\r\n" lines or NULL. Any thread. */
int bench_http(int port, const char *method, const char *path, const char *headers,
               const char *body, char *out, size_t out_size);

/* The value of the counter sample `series` (a metric name with its labels,
 * as /metrics prints it: `name{topic="t"}`) in one instance's /metrics, or
 * -1 if the request failed or the series is not there. */
long long bench_metric(int port, const char *series);

/* An idempotent producer (murmur2_random, linger.ms=5); exits the program
 * if librdkafka refuses it. The caller destroys it. */
rd_kafka_t *bench_producer_new(const char *bootstrap);

/* Produce one record (copied), polling while the queue is full. */
void bench_produce(rd_kafka_t *rk, const char *topic, const char *key, const void *value,
                   size_t len);

/* UserRegistered for `user_id` on the cluster's users.events. */
void bench_register_user(rd_kafka_t *rk, const bench_cluster *c, const char *user_id);

/* A SendMessage command from `from` to `to` on the cluster's
 * dialogs.commands, keyed by their dialog id. */
void bench_produce_send(rd_kafka_t *rk, const bench_cluster *c, const char *command_id,
                        const char *from, const char *to, const char *text);

/* A random version-4 UUID from rand_r(seed). */
void bench_random_uuid(char out[37], unsigned *seed);

#endif
