/*
 * kafka.h: how sluice creates librdkafka clients, and the embedded broker.
 *
 * Every client sluice creates goes through sl_kafka_conf_new, so the fixed
 * decisions hold everywhere: the murmur2_random partitioner (the Java
 * client's default, DESIGN.md 3), librdkafka's log routed to our logger, and
 * the user's kafka.* settings passed through.
 *
 * The embedded broker is librdkafka's in-process mock cluster. It is for
 * `make run` and fast unit tests only: it has no log compaction, keeps about
 * 100k records per partition and does not honour transactions (aborted
 * records stay visible to read_committed consumers). Nothing about restore,
 * compaction or exactly-once may be claimed from it.
 */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/base/log.h"

/* The partitioner every sluice producer uses. */
#define SL_KAFKA_PARTITIONER "murmur2_random"

/* The settings of a sluice group consumer, for a settings list ({"key",
 * "value", ..., NULL}) of sl_kafka_client_new: `group_id` as group.id,
 * cooperative-sticky assignment, read_committed, offsets committed (with
 * the transaction) and stored only by the caller, and a group without
 * committed offsets reads its input from the beginning. The engine's group
 * consumer and the raw-librdkafka benchmark baseline (bench/passthrough.c)
 * both use it, so the baseline consumes exactly as the engine does. */
#define SL_KAFKA_GROUP_CONSUMER_SETTINGS(group_id)                                                 \
    "group.id", (group_id), "partition.assignment.strategy", "cooperative-sticky",                 \
        "isolation.level", "read_committed", "enable.auto.commit", "false",                        \
        "enable.auto.offset.store", "false", "auto.offset.reset", "earliest"

/* Build a configuration for a client of `type` connecting to `bootstrap`
 * (copied into the conf): murmur2_random partitioner (producers; consumers
 * have no partitioner), librdkafka logs routed to `logger`, then
 * config's kafka.* entries: kafka.X for every client, kafka.producer.X only
 * for producers and kafka.consumer.X only for consumers, so a consumer
 * setting does not make every producer log a configuration warning. Then
 * config's kafka.* entries (config may be NULL). `logger` is borrowed and
 * must outlive every client created from the conf; it becomes the client's
 * opaque (rd_kafka_opaque), so use sl_kafka_conf_set_owner for anything
 * else. Returns NULL and fills errstr if a setting is rejected. The caller
 * owns the conf until rd_kafka_new takes it. */
rd_kafka_conf_t *sl_kafka_conf_new(rd_kafka_type_t type, const char *bootstrap,
                                   const sl_config *config, const sl_logger *logger, char *errstr,
                                   size_t errstr_size);

/* Set one librdkafka property, turning librdkafka's error into ours. */
sl_err sl_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                         size_t errstr_size);

/* Called on a fresh conf before the client is created, to set callbacks. */
typedef void sl_kafka_conf_hook(rd_kafka_conf_t *conf, void *opaque);

/* A client of `type`: sl_kafka_conf_new, then `settings` ({"key", "value",
 * ..., NULL}; may be NULL), then `opaque` as the client's opaque (it must begin with the sl_logger
 * the log callback reads: the logger itself, or a struct whose first member
 * is one), then
 * `hook` (may be NULL) for callbacks. The one place sluice calls
 * rd_kafka_new for a client of a cluster. NULL + errstr on failure (the
 * conf is freed). `logger` as for sl_kafka_conf_new. */
rd_kafka_t *sl_kafka_client_new(rd_kafka_type_t type, const char *bootstrap,
                                const sl_config *config, const sl_logger *logger,
                                const char *const *settings, void *opaque,
                                sl_kafka_conf_hook *hook, char *errstr, size_t errstr_size);

/* Stop a thread that reads `consumer`: set *stop (the thread's loop checks
 * it between polls), join the thread when `started`, then close and destroy
 * `consumer` (may be NULL; taken). On the thread that owns the reader. */
void sl_kafka_reader_stop(atomic_bool *stop, pthread_t thread, bool started,
                          rd_kafka_t *consumer);

/* Map a librdkafka error to our classes. A non-NULL `error` object (from the
 * transactional API) wins over `code`: fatal -> SL_ERR_KAFKA_FATAL,
 * txn_requires_abort -> SL_ERR_KAFKA_ABORTABLE, retriable ->
 * SL_ERR_KAFKA_RETRIABLE. Borrowed; not destroyed. */
sl_err sl_kafka_classify(rd_kafka_resp_err_t code, const rd_kafka_error_t *error);

/* Ask the cluster for its broker list (one metadata request). Returns the
 * broker count in *brokers. SL_ERR_TIMEOUT if nothing answered in time.
 * Any thread that owns rk for polling. */
sl_err sl_kafka_probe(rd_kafka_t *rk, int timeout_ms, int *brokers, char *errstr,
                      size_t errstr_size);

/* The embedded in-process broker (see the file comment for its limits). */
typedef struct sl_embedded_cluster sl_embedded_cluster;

/* Start a mock cluster with `brokers` brokers on loopback. `logger` is
 * borrowed and must outlive the cluster. NULL + errstr on failure. */
sl_embedded_cluster *sl_embedded_cluster_new(int brokers, const sl_logger *logger, char *errstr,
                                             size_t errstr_size);

/* Its bootstrap servers ("127.0.0.1:port,..."), borrowed from the cluster. */
const char *sl_embedded_cluster_bootstraps(const sl_embedded_cluster *cluster);

/* Create `topic` with `partitions` partitions on the embedded cluster,
 * replicated to min(3, brokers) brokers. The mock cluster has no admin API
 * (CreateTopics and DescribeConfigs go unanswered), so this is how topics
 * reach it; it keeps no topic configs (nothing is compacted anyway). SL_OK
 * also if the topic already exists: *created says which (compare an
 * existing topic through metadata). Any thread. */
sl_err sl_embedded_cluster_create_topic(sl_embedded_cluster *cluster, const char *topic,
                                        int partitions, bool *created, char *errstr,
                                        size_t errstr_size);

/* The underlying librdkafka mock cluster, borrowed from the cluster (valid
 * until sl_embedded_cluster_destroy), for tests that inject faults with the
 * rd_kafka_mock_* API (broker down, request errors, partition leaders). */
rd_kafka_mock_cluster_t *sl_embedded_cluster_mock(const sl_embedded_cluster *cluster);

void sl_embedded_cluster_destroy(sl_embedded_cluster *cluster);

#endif
