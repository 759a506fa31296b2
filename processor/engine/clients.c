/*
 * clients.c: the engine's Kafka clients and the instance id behind the
 * transactional id.
 *
 * Clients (all created through sl_kafka_client_new, with the engine as
 * their opaque: its first member is the logger librdkafka's log callback
 * reads):
 *   consumers         one group member per source (sub-topology), in the
 *                     group <application.id>-<source name>, subscribed to
 *                     that source's topic (cooperative-sticky,
 *                     read_committed, manual commits). One group for every
 *                     source would balance only the total partition count:
 *                     one instance could own every partition of one source.
 *                     librdkafka has no custom assignor, so the balance per
 *                     sub-topology comes from one group per sub-topology;
 *                     one transaction carries the offsets of each group
 *                     (send_offsets_to_transaction once per group). Each
 *                     consumer's queue writes a byte to engine->wake when
 *                     it becomes non-empty, so the loop waits on all.
 *   producer          one per instance; transactional under exactly_once_v2
 *                     (transactional.id = <application.id>-<instance id>,
 *                     the instance id persisted in the state directory so a
 *                     restart fences and aborts its own previous transaction
 *                     at once instead of leaving it hanging)
 *   restore consumer  assign-only, read_committed, reads changelogs
 *   global consumer   assign-only, read_committed, reads global topics
 *   standby consumer  assign-only, read_committed, follows the changelogs
 *                     of standby replicas (standby.c); wakes engine->wake
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "processor/base/clock.h"
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
    engine->fresh = true;
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

/* The user set librdkafka's `key` (kafka.<key> or kafka.<prefix>.<key>). */
static bool user_set(const sl_engine *engine, const char *prefix, const char *key) {
    char scoped[128];
    snprintf(scoped, sizeof(scoped), "%s.%s", prefix, key);
    for (size_t i = 0; i < sl_config_kafka_count(engine->config); i++) {
        const char *name, *value;
        sl_config_kafka_at(engine->config, i, &name, &value);
        if (strcmp(name, key) == 0 || strcmp(name, scoped) == 0)
            return true;
    }
    return false;
}

static bool config_true(const sl_engine *engine, const char *key) {
    return strcmp(sl_config_get(engine->config, key), "true") == 0;
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
    bool user_timeout = user_set(engine, "producer", "transaction.timeout.ms");
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

/* The group consumer of source `src`, in group <application.id>-<source>,
 * its queue waking the loop's pipe. */
static sl_err create_group_consumer(sl_engine *engine, size_t src, char *errstr,
                                    size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    /* Fail-over in seconds by default (group.static.membership says why);
     * the user's kafka.* settings win. 12 settings, at most 8 more and the
     * NULL. */
    const char *consumer_settings[32] = {SL_KAFKA_GROUP_CONSUMER_SETTINGS(engine->group_id[src])};
    size_t n = 0;
    while (consumer_settings[n])
        n++;
    if (config_true(engine, "group.static.membership")) {
        consumer_settings[n++] = "group.instance.id";
        consumer_settings[n++] = engine->instance_id;
    }
    if (!user_set(engine, "consumer", "session.timeout.ms")) {
        consumer_settings[n++] = "session.timeout.ms";
        consumer_settings[n++] = "6000";
    }
    if (!user_set(engine, "consumer", "heartbeat.interval.ms")) {
        consumer_settings[n++] = "heartbeat.interval.ms";
        consumer_settings[n++] = "1000";
    }
    /* librdkafka prefetches up to 64 MB per consumer; the groups share
     * that budget so the instance holds no more than one consumer did. */
    size_t kbytes = 65536 / topology->n_sources;
    char queued_kbytes[32];
    snprintf(queued_kbytes, sizeof(queued_kbytes), "%zu", kbytes > 4096 ? kbytes : 4096);
    if (!user_set(engine, "consumer", "queued.max.messages.kbytes")) {
        consumer_settings[n++] = "queued.max.messages.kbytes";
        consumer_settings[n++] = queued_kbytes;
    }
    engine->consumers[src] = new_client(engine, RD_KAFKA_CONSUMER, consumer_settings,
                                        group_consumer_hook, errstr, errstr_size);
    if (!engine->consumers[src])
        return SL_ERR_KAFKA;
    rd_kafka_queue_t *queue = rd_kafka_queue_get_consumer(engine->consumers[src]);
    if (!queue)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "group consumer has no queue");
    rd_kafka_queue_io_event_enable(queue, engine->wake[1], "w", 1);
    rd_kafka_queue_destroy(queue); /* the consumer keeps the queue */
    return SL_OK;
}

sl_err clients_create_consumers(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    if (pipe2(engine->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        engine->wake[0] = engine->wake[1] = -1;
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "pipe: %s", strerror(errno));
    }
    for (size_t src = 0; src < topology->n_sources; src++) {
        if (!fits(snprintf(engine->group_id[src], sizeof(engine->group_id[src]), "%s-%s",
                           engine->app_id, topology->sources[src].name),
                  sizeof(engine->group_id[src])))
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "group id too long");
        sl_err err = create_group_consumer(engine, src, errstr, errstr_size);
        if (err)
            return err;
    }
    const char *const side_settings[] = {"isolation.level",
                                         "read_committed",
                                         "enable.partition.eof",
                                         "true",
                                         "enable.auto.commit",
                                         "false",
                                         "group.id",
                                         engine->app_id, /* never joined; reads the
                                                            offsets of earlier versions */
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
    engine->standby_consumer =
        new_client(engine, RD_KAFKA_CONSUMER, side_settings, NULL, errstr, errstr_size);
    if (!engine->standby_consumer)
        return SL_ERR_KAFKA;
    engine->standby_queue = rd_kafka_queue_get_consumer(engine->standby_consumer);
    if (!engine->standby_queue)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "standby consumer has no queue");
    rd_kafka_queue_io_event_enable(engine->standby_queue, engine->wake[1], "s", 1);
    atomic_store(&engine->standby_ready, engine->standbys[0] != NULL);
    return SL_OK;
}

/* Every partition of source `src`, offsets unset. */
static rd_kafka_topic_partition_list_t *source_partitions(const sl_engine *engine, size_t src) {
    rd_kafka_topic_partition_list_t *list =
        rd_kafka_topic_partition_list_new(engine->source_partitions[src]);
    for (int32_t p = 0; p < engine->source_partitions[src]; p++)
        rd_kafka_topic_partition_list_add(list, engine->source_topic[src], p);
    return list;
}

/* rd_kafka_committed, retried for up to ADMIN_TIMEOUT_MS: on a fresh
 * cluster the group coordinator answers NOT_COORDINATOR or
 * COORDINATOR_LOAD_IN_PROGRESS for a while. */
static rd_kafka_resp_err_t committed(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list) {
    int64_t deadline = sl_clock_mono_ms() + ADMIN_TIMEOUT_MS;
    for (;;) {
        rd_kafka_resp_err_t code = rd_kafka_committed(rk, list, ADMIN_TIMEOUT_MS);
        for (int i = 0; !code && i < list->cnt; i++)
            code = list->elems[i].err; /* an offset not known is not "none" */
        if (code == RD_KAFKA_RESP_ERR_NO_ERROR || sl_clock_mono_ms() >= deadline)
            return code;
        usleep(200 * 1000);
    }
}

static bool any_committed(const rd_kafka_topic_partition_list_t *list) {
    for (int i = 0; i < list->cnt; i++)
        if (list->elems[i].offset >= 0)
            return true;
    return false;
}

/* Earlier versions had one group, application.id, for every source. A
 * source group with no committed offset takes that group's offsets for its
 * topic before it first joins; without this an upgrade would process every
 * command again from the start. The restore consumer carries group.id =
 * application.id (it never joins), so it reads them. Two instances starting
 * at once copy the same offsets; a commit refused because the group formed
 * meanwhile means another member copied them first. */
static sl_err take_legacy_offsets(sl_engine *engine, size_t src, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *own = source_partitions(engine, src);
    rd_kafka_resp_err_t code = committed(engine->consumers[src], own);
    bool has_own = !code && any_committed(own);
    rd_kafka_topic_partition_list_destroy(own);
    if (code)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "committed offsets of group %s: %s",
                       engine->group_id[src], rd_kafka_err2str(code));
    if (has_own)
        return SL_OK;
    rd_kafka_topic_partition_list_t *legacy = source_partitions(engine, src);
    code = committed(engine->restore_consumer, legacy);
    if (code) {
        rd_kafka_topic_partition_list_destroy(legacy);
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "committed offsets of group %s: %s",
                       engine->app_id, rd_kafka_err2str(code));
    }
    rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_new(legacy->cnt);
    for (int i = 0; i < legacy->cnt; i++)
        if (legacy->elems[i].offset >= 0)
            rd_kafka_topic_partition_list_add(copy, legacy->elems[i].topic,
                                              legacy->elems[i].partition)
                ->offset = legacy->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(legacy);
    if (copy->cnt > 0) {
        code = rd_kafka_commit(engine->consumers[src], copy, 0);
        if (code)
            LOG(engine, SL_LOG_WARN, "group %s: cannot take the offsets of group %s: %s",
                engine->group_id[src], engine->app_id, rd_kafka_err2str(code));
        else
            LOG(engine, SL_LOG_INFO,
                "group %s: took %d committed offset%s of group %s (an earlier version's)",
                engine->group_id[src], copy->cnt, copy->cnt == 1 ? "" : "s", engine->app_id);
    }
    rd_kafka_topic_partition_list_destroy(copy);
    return SL_OK;
}

static sl_err subscribe_group(sl_engine *engine, size_t src, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, engine->source_topic[src], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t code = rd_kafka_subscribe(engine->consumers[src], topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (code)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "subscribe %s: %s",
                       engine->source_topic[src], rd_kafka_err2str(code));
    return SL_OK;
}

sl_err clients_subscribe(sl_engine *engine, char *errstr, size_t errstr_size) {
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        sl_err err = take_legacy_offsets(engine, src, errstr, errstr_size);
        if (!err)
            err = subscribe_group(engine, src, errstr, errstr_size);
        if (err)
            return err;
    }
    return SL_OK;
}

/* The longest wait before a fenced group is joined again; the wait doubles
 * from 500 ms with each fence that comes within 5 minutes of the last. */
#define REJOIN_BACKOFF_MAX_MS 60000

void clients_drop_group(sl_engine *engine, size_t src) {
    int64_t now = sl_clock_mono_ms();
    if (now - engine->group_fenced_ms[src] > 5 * 60 * 1000)
        engine->group_fences[src] = 0;
    engine->group_fences[src]++;
    engine->group_fenced_ms[src] = now;
    int64_t backoff = 500;
    for (int i = 1; i < engine->group_fences[src] && backoff < REJOIN_BACKOFF_MAX_MS; i++)
        backoff *= 2;
    if (backoff > REJOIN_BACKOFF_MAX_MS)
        backoff = REJOIN_BACKOFF_MAX_MS;
    engine->group_rejoin_ms[src] = now + backoff;
    /* A fatally failed consumer cannot leave its group or revoke anything:
     * destroy it without the close (which would call the rebalance
     * callback on a dead handle). */
    rd_kafka_destroy_flags(engine->consumers[src], RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    engine->consumers[src] = NULL;
    engine->joined[src] = false;
    LOG(engine, SL_LOG_INFO, "%s: joining again in %lld ms with a new consumer",
        engine->group_id[src], (long long)backoff);
}

void clients_rejoin_groups(sl_engine *engine) {
    int64_t now = sl_clock_mono_ms();
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        if (engine->consumers[src] || engine->closed || now < engine->group_rejoin_ms[src])
            continue;
        char why[512];
        sl_err err = create_group_consumer(engine, src, why, sizeof(why));
        if (!err)
            err = subscribe_group(engine, src, why, sizeof(why));
        if (err) {
            LOG(engine, SL_LOG_ERROR, "%s: cannot join again: %s (retrying in 5 s)",
                engine->group_id[src], why);
            if (engine->consumers[src])
                rd_kafka_destroy_flags(engine->consumers[src],
                                       RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
            engine->consumers[src] = NULL;
            engine->group_rejoin_ms[src] = now + 5000;
            continue;
        }
        LOG(engine, SL_LOG_INFO, "%s: joining again with a new consumer", engine->group_id[src]);
    }
}

int clients_source_of(const sl_engine *engine, const rd_kafka_t *rk) {
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        if (engine->consumers[src] == rk)
            return (int)src;
    return -1;
}

/* Leave every group now: unsubscribe (which, unlike close, sends a
 * LeaveGroup even for a static member), serve the revokes, and wait until
 * every assignment is empty. */
static void leave_groups(sl_engine *engine) {
    size_t n_sources = engine->topology->n_sources;
    for (size_t src = 0; src < n_sources; src++)
        if (engine->consumers[src])
            rd_kafka_unsubscribe(engine->consumers[src]);
    for (int64_t deadline = sl_clock_mono_ms() + 10000; sl_clock_mono_ms() < deadline;) {
        bool empty = true;
        for (size_t src = 0; src < n_sources; src++) {
            if (!engine->consumers[src])
                continue;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(engine->consumers[src], 10);
            if (m)
                rd_kafka_message_destroy(m); /* unprocessed: the next owner reads it */
            rd_kafka_topic_partition_list_t *assignment = NULL;
            if (!rd_kafka_assignment(engine->consumers[src], &assignment) && assignment) {
                empty &= assignment->cnt == 0;
                rd_kafka_topic_partition_list_destroy(assignment);
            }
        }
        if (empty)
            return;
    }
    LOG(engine, SL_LOG_WARN, "leaving the groups took more than 10 s; closing anyway");
}

void clients_close_consumers(sl_engine *engine) {
    if (config_true(engine, "group.leave.on.shutdown"))
        leave_groups(engine);
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        if (!engine->consumers[src])
            continue;
        rd_kafka_resp_err_t code = rd_kafka_consumer_close(engine->consumers[src]);
        if (code)
            LOG(engine, SL_LOG_WARN, "consumer close (%s): %s", engine->group_id[src],
                rd_kafka_err2str(code));
    }
}

void clients_destroy(sl_engine *engine) {
    for (size_t src = 0; src < SL_TOPOLOGY_MAX_NODES; src++)
        if (engine->consumers[src])
            rd_kafka_destroy(engine->consumers[src]);
    if (engine->restore_queue)
        rd_kafka_queue_destroy(engine->restore_queue);
    if (engine->restore_consumer) {
        rd_kafka_consumer_close(engine->restore_consumer);
        rd_kafka_destroy(engine->restore_consumer);
    }
    if (engine->global_consumer) {
        rd_kafka_consumer_close(engine->global_consumer);
        rd_kafka_destroy(engine->global_consumer);
    }
    if (engine->standby_queue)
        rd_kafka_queue_destroy(engine->standby_queue);
    if (engine->standby_consumer) {
        rd_kafka_consumer_close(engine->standby_consumer);
        rd_kafka_destroy(engine->standby_consumer);
    }
    if (engine->producer)
        rd_kafka_destroy(engine->producer);
    for (int i = 0; i < 2; i++)
        if (engine->wake[i] >= 0)
            close(engine->wake[i]);
}
