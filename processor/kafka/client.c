/* kafka.c: client configuration defaults, error classes, the embedded broker. */
#include "processor/kafka/client.h"

#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static void log_cb(const rd_kafka_t *rk, int level, const char *facility, const char *buf) {
    const sl_logger *logger = rd_kafka_opaque(rk);
    sl_log_level ours = level <= LOG_ERR       ? SL_LOG_ERROR
                        : level <= LOG_WARNING ? SL_LOG_WARN
                        : level <= LOG_INFO    ? SL_LOG_INFO
                                               : SL_LOG_DEBUG;
    sl_log(logger, ours, "kafka", "%s %s: %s", rd_kafka_name(rk), facility, buf);
}

sl_err sl_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                         size_t errstr_size) {
    char why[512];
    if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "kafka.%s: %s", key, why);
    return SL_OK;
}

rd_kafka_conf_t *sl_kafka_conf_new(rd_kafka_type_t type, const char *bootstrap,
                                   const sl_config *config, const sl_logger *logger, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (sl_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, errstr_size))
        goto fail;
    if (type == RD_KAFKA_PRODUCER &&
        sl_kafka_conf_set(conf, "partitioner", SL_KAFKA_PARTITIONER, errstr, errstr_size))
        goto fail;
    if (config) {
        for (size_t i = 0; i < sl_config_kafka_count(config); i++) {
            const char *key, *value;
            sl_config_kafka_at(config, i, &key, &value);
            /* kafka.producer.X / kafka.consumer.X reach only that kind of
             * client; plain kafka.X reaches every client. */
            if (strncmp(key, "producer.", 9) == 0) {
                if (type != RD_KAFKA_PRODUCER)
                    continue;
                key += 9;
            } else if (strncmp(key, "consumer.", 9) == 0) {
                if (type != RD_KAFKA_CONSUMER)
                    continue;
                key += 9;
            }
            if (sl_kafka_conf_set(conf, key, value, errstr, errstr_size))
                goto fail;
        }
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, (void *)logger);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *sl_kafka_client_new(rd_kafka_type_t type, const char *bootstrap,
                                const sl_config *config, const sl_logger *logger,
                                const char *const *settings, void *opaque,
                                sl_kafka_conf_hook *hook, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = sl_kafka_conf_new(type, bootstrap, config, logger, errstr, errstr_size);
    if (!conf)
        return NULL;
    for (const char *const *s = settings; s && s[0]; s += 2)
        if (sl_kafka_conf_set(conf, s[0], s[1], errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_opaque(conf, opaque);
    if (hook)
        hook(conf, opaque);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create Kafka client: %s", why);
    }
    return rk;
}

void sl_kafka_reader_stop(atomic_bool *stop, pthread_t thread, bool started,
                          rd_kafka_t *consumer) {
    atomic_store(stop, true);
    if (started)
        pthread_join(thread, NULL);
    if (consumer) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
}

sl_err sl_kafka_classify(rd_kafka_resp_err_t code, const rd_kafka_error_t *error) {
    if (error) {
        if (rd_kafka_error_is_fatal(error))
            return SL_ERR_KAFKA_FATAL;
        if (rd_kafka_error_txn_requires_abort(error))
            return SL_ERR_KAFKA_ABORTABLE;
        if (rd_kafka_error_is_retriable(error))
            return SL_ERR_KAFKA_RETRIABLE;
        code = rd_kafka_error_code(error);
    }
    switch (code) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return SL_OK;
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        return SL_ERR_KAFKA_FATAL;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS:
        return SL_ERR_KAFKA_RETRIABLE;
    default:
        return SL_ERR_KAFKA;
    }
}

sl_err sl_kafka_probe(rd_kafka_t *rk, int timeout_ms, int *brokers, char *errstr,
                      size_t errstr_size) {
    const struct rd_kafka_metadata *metadata = NULL;
    rd_kafka_resp_err_t code = rd_kafka_metadata(rk, 0, NULL, &metadata, timeout_ms);
    if (code) {
        return sl_fail(errstr, errstr_size,
                       code == RD_KAFKA_RESP_ERR__TIMED_OUT ? SL_ERR_TIMEOUT : SL_ERR_KAFKA,
                       "metadata request failed: %s", rd_kafka_err2str(code));
    }
    *brokers = metadata->broker_cnt;
    rd_kafka_metadata_destroy(metadata);
    return SL_OK;
}

struct sl_embedded_cluster {
    rd_kafka_t *owner;             /* the mock cluster lives inside this handle */
    rd_kafka_mock_cluster_t *mock; /* borrowed from owner */
    char *bootstraps;
    int brokers;
};

sl_embedded_cluster *sl_embedded_cluster_new(int brokers, const sl_logger *logger, char *errstr,
                                             size_t errstr_size) {
    sl_embedded_cluster *cluster = calloc(1, sizeof(*cluster));
    if (!cluster) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, (void *)logger);
    char why[512], count[16];
    snprintf(count, sizeof(count), "%d", brokers);
    /* test.mock.num.brokers makes the owner handle start the mock cluster and
     * bootstrap to it, so the owner is a normal, connected client. */
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", count, why, sizeof(why))) {
        rd_kafka_conf_destroy(conf);
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "embedded broker: %s", why);
        goto fail;
    }
    cluster->brokers = brokers;
    cluster->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!cluster->owner) {
        rd_kafka_conf_destroy(conf);
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "embedded broker: %s", why);
        goto fail;
    }
    cluster->mock = rd_kafka_handle_mock_cluster(cluster->owner);
    if (!cluster->mock) {
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "embedded broker: cannot start mock cluster");
        goto fail;
    }
    cluster->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(cluster->mock));
    if (!cluster->bootstraps) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    return cluster;
fail:
    sl_embedded_cluster_destroy(cluster);
    return NULL;
}

const char *sl_embedded_cluster_bootstraps(const sl_embedded_cluster *cluster) {
    return cluster->bootstraps;
}

sl_err sl_embedded_cluster_create_topic(sl_embedded_cluster *cluster, const char *topic,
                                        int partitions, bool *created, char *errstr,
                                        size_t errstr_size) {
    int replicas = cluster->brokers < 3 ? cluster->brokers : 3;
    rd_kafka_resp_err_t code =
        rd_kafka_mock_topic_create(cluster->mock, topic, partitions, replicas);
    *created = code == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (code && code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "embedded broker: create %s: %s", topic,
                       rd_kafka_err2str(code));
    return SL_OK;
}

rd_kafka_mock_cluster_t *sl_embedded_cluster_mock(const sl_embedded_cluster *cluster) {
    return cluster->mock;
}

void sl_embedded_cluster_destroy(sl_embedded_cluster *cluster) {
    if (!cluster)
        return;
    if (cluster->owner)
        rd_kafka_destroy(cluster->owner);
    free(cluster->bootstraps);
    free(cluster);
}
