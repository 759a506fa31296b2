/*
 * admin.h: Kafka admin helpers: create topics the engine needs and check that
 * existing ones match their definition.
 *
 * All calls are synchronous (bounded by timeout_ms) and use a temporary
 * queue on the given client, so they can run on any thread that may use rk.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "processor/base/error.h"

typedef struct sl_topic_spec {
    const char *name;
    int partitions;
    int replication_factor;     /* -1: the broker's default */
    const char *const *configs; /* NULL or {"key", "value", ..., NULL} */
} sl_topic_spec;

/* Create the topic if it does not exist. If it exists, its partition count
 * and every config in spec->configs must match, else SL_ERR_TOPIC_MISMATCH
 * with errstr naming the difference (a clear startup error, never a silent
 * mis-partitioned changelog). Idempotent. rk and spec are borrowed. */
sl_err sl_admin_ensure_topic(rd_kafka_t *rk, const sl_topic_spec *spec, int timeout_ms,
                             char *errstr, size_t errstr_size);

/* Read one config value of a topic or broker (type RD_KAFKA_RESOURCE_TOPIC or
 * RD_KAFKA_RESOURCE_BROKER with the broker id as name) into out (bounded;
 * SL_ERR_FULL if it does not fit). SL_ERR_NOT_FOUND if the key is absent. */
sl_err sl_admin_describe_config(rd_kafka_t *rk, rd_kafka_ResourceType_t type, const char *name,
                                const char *key, char *out, size_t out_size, int timeout_ms,
                                char *errstr, size_t errstr_size);

/* The existing topic has spec->partitions partitions, else
 * SL_ERR_TOPIC_MISMATCH (configs are not compared: for a cluster that keeps
 * none, such as the embedded one). */
sl_err sl_admin_check_partitions(rd_kafka_t *rk, const sl_topic_spec *spec, int timeout_ms,
                                 char *errstr, size_t errstr_size);

/* Partition count of an existing topic in *partitions; SL_ERR_NOT_FOUND if the
 * topic does not exist. */
sl_err sl_admin_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, int *partitions,
                                 char *errstr, size_t errstr_size);

#endif
