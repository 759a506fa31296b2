/*
 * clients.c: the engine's Kafka clients and the instance id behind the
 * transactional id.
 *
 * Clients (all created through sl_kafka_client_new, with the engine as
 * their opaque: its first member is the logger librdkafka's log callback
 * reads):
 *   consumer          the group member (group.id = application.id,
 *                     cooperative-sticky, read_committed, manual commits);
 *                     subscribed to every source topic
 *   producer          one per instance; transactional under exactly_once_v2
 *                     (transactional.id = <application.id>-<instance id>,
 *                     the instance id persisted in the state directory so a
 *                     restart fences and aborts its own previous transaction
 *                     at once instead of leaving it hanging)
 *   restore consumer  assign-only, read_committed, reads changelogs
 *   global consumer   assign-only, read_committed, reads global topics
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "processor/engine/engine_int.h"
#include "processor/kafka/client.h"

/* The instance id survives restarts (it names the transactional id), and is
 * new for every state directory. */
sl_err clients_load_instance_id(sl_engine *engine, char *errstr, size_t errstr_size) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/instance.id", engine->state_path) >= (int)sizeof(path))
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
    FILE *file = fopen(path, "r");
    if (file) {
        char buf[64] = "";
        bool ok = fgets(buf, sizeof(buf), file) != NULL;
        fclose(file);
        size_t n = ok ? strcspn(buf, "\r\n") : 0;
        if (n == 32 && strspn(buf, "0123456789abcdef") >= 32) {
            memcpy(engine->instance_id, buf, 32);
            engine->instance_id[32] = '\0';
            return SL_OK;
        }
        LOG(engine, SL_LOG_WARN, "%s is malformed; generating a new instance id", path);
    }
    unsigned char random[16];
    if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random))
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "getrandom failed: %s", strerror(errno));
    for (int i = 0; i < 16; i++)
        snprintf(engine->instance_id + 2 * i, 3, "%02x", random[i]);
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    file = fopen(tmp, "w");
    if (!file || fprintf(file, "%s\n", engine->instance_id) < 0 || fflush(file) != 0 ||
        fsync(fileno(file)) != 0) {
        if (file)
            fclose(file);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    fclose(file);
    if (rename(tmp, path) != 0)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot rename %s: %s", tmp,
                       strerror(errno));
    return SL_OK;
}

static void producer_hook(rd_kafka_conf_t *conf, void *opaque) {
    (void)opaque;
    rd_kafka_conf_set_dr_msg_cb(conf, collector_delivery_cb);
}

static void group_consumer_hook(rd_kafka_conf_t *conf, void *opaque) {
    (void)opaque;
    rd_kafka_conf_set_rebalance_cb(conf, engine_rebalance_cb);
}

static rd_kafka_t *new_client(sl_engine *engine, rd_kafka_type_t type, const char *const *settings,
                              sl_kafka_conf_hook *hook, char *errstr, size_t errstr_size) {
    return sl_kafka_client_new(type, engine->bootstrap, engine->config, &engine->logger, settings,
                               engine, hook, errstr, errstr_size);
}

sl_err clients_create_producer(sl_engine *engine, char *errstr, size_t errstr_size) {
    char txn_id[512];
    snprintf(txn_id, sizeof(txn_id), "%s-%s", engine->app_id, engine->instance_id);
    /* A crashed instance's open transaction blocks read_committed readers of
     * its outputs until it times out (or the instance restarts and fences
     * it): 10 s, as Kafka Streams uses, unless the user chose otherwise. */
    bool user_timeout = false;
    for (size_t i = 0; i < sl_config_kafka_count(engine->config); i++) {
        const char *key, *value;
        sl_config_kafka_at(engine->config, i, &key, &value);
        user_timeout |= strcmp(key, "transaction.timeout.ms") == 0 ||
                        strcmp(key, "producer.transaction.timeout.ms") == 0;
    }
    const char *const eos_settings[] = {"transactional.id",
                                        txn_id,
                                        "enable.idempotence",
                                        "true",
                                        "acks",
                                        "all",
                                        user_timeout ? NULL : "transaction.timeout.ms",
                                        "10000",
                                        NULL};
    const char *const alos_settings[] = {"enable.idempotence", "true", "acks", "all", NULL};
    engine->producer = new_client(engine, RD_KAFKA_PRODUCER,
                                  engine->eos ? eos_settings : alos_settings, producer_hook,
                                  errstr, errstr_size);
    if (!engine->producer)
        return SL_ERR_KAFKA;
    if (engine->eos) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(engine->producer, TXN_TIMEOUT_MS);
        if (error) {
            sl_err err = sl_fail(errstr, errstr_size, sl_kafka_classify(0, error),
                                 "init_transactions: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rd_kafka_destroy(engine->producer);
            engine->producer = NULL;
            return err;
        }
    }
    collector_producer_created(engine);
    return SL_OK;
}

void clients_destroy_producer(sl_engine *engine) {
    if (engine->producer)
        rd_kafka_destroy(engine->producer);
    engine->producer = NULL;
    collector_producer_destroyed(engine);
}

sl_err clients_create_consumers(sl_engine *engine, char *errstr, size_t errstr_size) {
    const char *const consumer_settings[] = {SL_KAFKA_GROUP_CONSUMER_SETTINGS(engine->app_id),
                                             NULL};
    engine->consumer = new_client(engine, RD_KAFKA_CONSUMER, consumer_settings,
                                  group_consumer_hook, errstr, errstr_size);
    if (!engine->consumer)
        return SL_ERR_KAFKA;
    const char *const side_settings[] = {"isolation.level",
                                         "read_committed",
                                         "enable.partition.eof",
                                         "true",
                                         "enable.auto.commit",
                                         "false",
                                         "group.id",
                                         engine->app_id,
                                         "max.partition.fetch.bytes",
                                         "8388608",
                                         NULL};
    engine->restore_consumer =
        new_client(engine, RD_KAFKA_CONSUMER, side_settings, NULL, errstr, errstr_size);
    if (!engine->restore_consumer)
        return SL_ERR_KAFKA;
    engine->restore_queue = rd_kafka_queue_get_consumer(engine->restore_consumer);
    if (!engine->restore_queue)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "restore consumer has no queue");
    engine->global_consumer =
        new_client(engine, RD_KAFKA_CONSUMER, side_settings, NULL, errstr, errstr_size);
    if (!engine->global_consumer)
        return SL_ERR_KAFKA;
    return SL_OK;
}
