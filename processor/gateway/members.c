/*
 * members.c: the membership table (see members.h).
 *
 * The thread loop, every <= 100 ms:
 *   poll the consumer (one record at a time) -> apply: tombstone removes
 *     the entry, a record replaces it (last_seen = arrival, minus the
 *     record's age by its timestamp, so records read at start-up from the
 *     topic's history are as old as they really are)
 *   if the engine's assignment version changed, or interval_ms passed:
 *     publish this instance's record
 * Lookups take the table mutex; entries hold their assignment as a jansson
 * object (immutable once stored).
 */
#include "processor/gateway/members.h"
#include "processor/base/clock.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"

#define ADMIN_TIMEOUT_MS 30000
#define MAX_VALUE_BYTES  (64 * 1024)
#define MAX_ASSIGNED     8192

typedef struct entry {
    bool used;
    char instance_id[SL_MEMBERS_MAX_ID];
    char address[SL_MEMBERS_MAX_ADDRESS];
    int64_t last_seen_ms; /* monotonic */
    json_t *assignment;   /* {"topic": [partitions]} */
} entry;

struct sl_members {
    sl_logger logger; /* first member: the clients' opaque */
    sl_engine *engine;
    rd_kafka_t *producer, *consumer;
    const sl_trust *trust;
    sl_counter *rejected;
    uint64_t rejected_seen; /* thread only: logs the first few, then every 1000th */
    char topic[256];
    char instance_id[SL_MEMBERS_MAX_ID];
    char address[SL_MEMBERS_MAX_ADDRESS];
    bool publish;
    /* The topic's end when the instance started; read_to_end (thread only)
     * once the consumer got there: what was published before is known. An
     * end-of-partition event alone would not do: with members publishing
     * faster than a fetch waits, a fetch never comes back empty. */
    int64_t history_end;
    bool read_to_end;
    int interval_ms, expiry_ms;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    pthread_mutex_t lock;
    entry entries[SL_MEMBERS_MAX];
    /* publisher state (thread only) */
    uint64_t published_version;
    int64_t published_ms;
    bool published_once;
    const char **assigned_topics;
    int32_t *assigned_partitions;
    /* standby state (thread only) */
    int standby_replicas; /* num.standby.replicas */
    int64_t standbys_ms;
    const char **standby_topics;
    int32_t *standby_partitions;
    bool *standby_wanted;
};

#define LOG(m, level, ...) sl_log(&(m)->logger, level, "members", __VA_ARGS__)

static bool live(const sl_members *m, const entry *e, int64_t now) {
    return e->used && now - e->last_seen_ms <= m->expiry_ms;
}

static void entry_clear(entry *e) {
    json_decref(e->assignment);
    memset(e, 0, sizeof(*e));
}

/* Does the record carry a valid MAC (trust.h)? Counts and logs the ones
 * that do not. */
static bool authentic(sl_members *m, rd_kafka_message_t *msg) {
    rd_kafka_headers_t *headers = NULL;
    const void *mac = NULL;
    size_t mac_len = 0;
    if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_header_get_last(headers, SL_TRUST_RECORD_HEADER, &mac, &mac_len);
    sl_trust_verdict verdict = sl_trust_record_verify(m->trust, mac, mac_len, msg->key,
                                                      msg->key_len, msg->payload, msg->len);
    if (verdict == SL_TRUST_VALID)
        return true;
    if (m->rejected)
        sl_counter_add(m->rejected, 1);
    if (++m->rejected_seen <= 10 || m->rejected_seen % 1000 == 0)
        LOG(m, SL_LOG_WARN,
            "record at offset %lld ignored: %s (a writer without the cluster secret; %llu so "
            "far)",
            (long long)msg->offset, mac ? "invalid MAC" : "no MAC",
            (unsigned long long)m->rejected_seen);
    return false;
}

/* Apply one record of the members topic. */
static void apply(sl_members *m, rd_kafka_message_t *msg) {
    if (!msg->key || msg->key_len == 0 || msg->key_len >= SL_MEMBERS_MAX_ID)
        return;
    if (!authentic(m, msg))
        return;
    char id[SL_MEMBERS_MAX_ID];
    memcpy(id, msg->key, msg->key_len);
    id[msg->key_len] = '\0';
    json_t *doc = NULL, *assignment = NULL;
    const char *address = NULL;
    if (msg->payload) {
        if (msg->len > MAX_VALUE_BYTES)
            return;
        doc = json_loadb(msg->payload, msg->len, JSON_REJECT_DUPLICATES, NULL);
        address = doc ? json_string_value(json_object_get(doc, "address")) : NULL;
        assignment = doc ? json_object_get(doc, "assignment") : NULL;
        if (!address || strlen(address) >= SL_MEMBERS_MAX_ADDRESS || !json_is_object(assignment)) {
            LOG(m, SL_LOG_WARN, "malformed record at offset %lld ignored", (long long)msg->offset);
            json_decref(doc);
            return;
        }
    }
    int64_t now = sl_clock_mono_ms();
    rd_kafka_timestamp_type_t ts_type;
    int64_t ts = rd_kafka_message_timestamp(msg, &ts_type);
    int64_t age = ts > 0 ? sl_clock_wall_ms() - ts : 0;
    if (age < 0)
        age = 0;
    pthread_mutex_lock(&m->lock);
    entry *slot = NULL, *free_slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++) {
        entry *e = &m->entries[i];
        if (e->used && strcmp(e->instance_id, id) == 0)
            slot = e;
        else if (!e->used && !free_slot)
            free_slot = e;
        else if (e->used && (!oldest || e->last_seen_ms < oldest->last_seen_ms))
            oldest = e;
    }
    if (!doc) { /* tombstone */
        if (slot)
            entry_clear(slot);
    } else {
        if (!slot)
            slot = free_slot;
        if (!slot && oldest && !live(m, oldest, now)) {
            entry_clear(oldest);
            slot = oldest;
        }
        if (slot) {
            json_decref(slot->assignment);
            slot->used = true;
            snprintf(slot->instance_id, sizeof(slot->instance_id), "%s", id);
            snprintf(slot->address, sizeof(slot->address), "%s", address);
            slot->last_seen_ms = now - age;
            slot->assignment = json_incref(assignment);
        } else {
            LOG(m, SL_LOG_WARN, "more than %d live instances: %s ignored", SL_MEMBERS_MAX, id);
        }
    }
    pthread_mutex_unlock(&m->lock);
    json_decref(doc);
}

static void publish(sl_members *m, uint64_t version, size_t n) {
    json_t *assignment = json_object();
    for (size_t i = 0; assignment && i < n; i++) {
        json_t *list = json_object_get(assignment, m->assigned_topics[i]);
        if (!list) {
            list = json_array();
            json_object_set_new(assignment, m->assigned_topics[i], list);
        }
        json_array_append_new(list, json_integer(m->assigned_partitions[i]));
    }
    json_t *doc = json_pack("{s:s, s:s, s:o}", "instance", m->instance_id, "address", m->address,
                            "assignment", assignment);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return; /* out of memory: try again next round */
    char mac[SL_TRUST_RECORD_MAC_MAX];
    if (sl_trust_record_sign(m->trust, m->instance_id, strlen(m->instance_id), text, strlen(text),
                             mac, sizeof(mac))) {
        free(text);
        return; /* out of memory: try again next round */
    }
    rd_kafka_resp_err_t code =
        rd_kafka_producev(m->producer, RD_KAFKA_V_TOPIC(m->topic),
                          RD_KAFKA_V_KEY(m->instance_id, strlen(m->instance_id)),
                          RD_KAFKA_V_VALUE(text, strlen(text)),
                          RD_KAFKA_V_HEADER(SL_TRUST_RECORD_HEADER, mac, (ssize_t)strlen(mac)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
    if (code) {
        free(text);
        LOG(m, SL_LOG_WARN, "cannot publish membership: %s", rd_kafka_err2str(code));
        return;
    }
    m->published_version = version;
    m->published_ms = sl_clock_mono_ms();
    m->published_once = true;
}

static int by_instance_id(const void *a, const void *b) {
    return strcmp((*(const entry *const *)a)->instance_id, (*(const entry *const *)b)->instance_id);
}

/* Standby replicas (num.standby.replicas): in the ring of live instance ids
 * in ascending order, the r instances after a partition's owner keep its
 * standbys. Every instance computes the same ring from the same table, so
 * each knows its share without a coordinator. While a dead owner's record
 * has not expired, its partitions may be claimed twice; the newer record
 * is applied last and wins. Every 500 ms. */
/* Every partition `e` claims into the standby lists from index n on, as
 * wanted or not; the new count. Under m->lock (the topics point into e). */
static size_t add_standbys(sl_members *m, const entry *e, bool wanted, size_t n) {
    const char *topic;
    json_t *partitions;
    json_object_foreach(e->assignment, topic, partitions) {
        size_t index;
        json_t *value;
        json_array_foreach(partitions, index, value) {
            if (n >= MAX_ASSIGNED || !json_is_integer(value))
                continue;
            m->standby_topics[n] = topic;
            m->standby_partitions[n] = (int32_t)json_integer_value(value);
            m->standby_wanted[n] = wanted;
            n++;
        }
    }
    return n;
}

/* A new instance warming up before it joins (sl_engine_warming): a standby
 * of every partition the live instances own, since the group's assignor
 * will pick the ones that move here. Planned once the topic's history is
 * read, so "nobody runs" is known, not guessed. Under m->lock. */
static void plan_warmup(sl_members *m, int64_t now) {
    size_t n = 0;
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++) {
        const entry *e = &m->entries[i];
        if (!live(m, e, now) || !e->assignment || strcmp(e->instance_id, m->instance_id) == 0)
            continue;
        n = add_standbys(m, e, true, n);
    }
    sl_engine_set_standbys(m->engine, m->standby_topics, m->standby_partitions, m->standby_wanted,
                           n);
    sl_engine_warmup_planned(m->engine, n);
}

static void update_standbys(sl_members *m) {
    int64_t now = sl_clock_mono_ms();
    if (!m->engine || !m->publish || now - m->standbys_ms < 500)
        return;
    m->standbys_ms = now;
    const entry *ring[SL_MEMBERS_MAX];
    size_t k = 0, n = 0;
    pthread_mutex_lock(&m->lock);
    if (sl_engine_warming(m->engine)) {
        if (m->read_to_end)
            plan_warmup(m, now);
        pthread_mutex_unlock(&m->lock);
        return;
    }
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++)
        if (live(m, &m->entries[i], now) && m->entries[i].assignment)
            ring[k++] = &m->entries[i];
    qsort(ring, k, sizeof(ring[0]), by_instance_id);
    size_t self = k;
    for (size_t i = 0; i < k; i++)
        if (strcmp(ring[i]->instance_id, m->instance_id) == 0)
            self = i;
    /* Oldest record first, so the newest claim of a partition is last. */
    size_t order[SL_MEMBERS_MAX];
    for (size_t i = 0; i < k; i++)
        order[i] = i;
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && ring[order[j]]->last_seen_ms < ring[order[j - 1]]->last_seen_ms;
             j--) {
            size_t swap = order[j];
            order[j] = order[j - 1];
            order[j - 1] = swap;
        }
    for (size_t i = 0; self < k && i < k; i++) {
        size_t owner = order[i];
        if (owner == self)
            continue;
        size_t distance = (self + k - owner) % k; /* steps from the owner to us */
        bool wanted = distance >= 1 && distance <= (size_t)m->standby_replicas;
        n = add_standbys(m, ring[owner], wanted, n);
    }
    if (self < k)
        sl_engine_set_standbys(m->engine, m->standby_topics, m->standby_partitions,
                               m->standby_wanted, n);
    pthread_mutex_unlock(&m->lock);
}

static void *run(void *arg) {
    sl_members *m = arg;
    while (!atomic_load(&m->stop)) {
        rd_kafka_poll(m->producer, 0);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(m->consumer, 100);
        if (msg) {
            if (!msg->err)
                apply(m, msg);
            if (!msg->err && msg->offset + 1 >= m->history_end)
                m->read_to_end = true;
            else if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                m->read_to_end = true;
            else
                LOG(m, SL_LOG_WARN, "consumer: %s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
        }
        if (!m->publish)
            continue;
        uint64_t version = 0;
        size_t n = m->engine
                       ? sl_engine_query_assignment(m->engine, m->assigned_topics,
                                                    m->assigned_partitions, MAX_ASSIGNED, &version)
                       : 0;
        if (!m->published_once || version != m->published_version ||
            sl_clock_mono_ms() - m->published_ms >= m->interval_ms)
            publish(m, version, n);
        update_standbys(m);
    }
    return NULL;
}

sl_members *sl_members_new(const sl_config *config, const char *bootstrap,
                           const sl_members_options *options, sl_engine *engine,
                           const sl_logger *logger, char *errstr, size_t errstr_size) {
    sl_members *m = calloc(1, sizeof(*m));
    if (!m) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    m->logger = *logger;
    m->engine = engine;
    m->trust = options->trust;
    m->rejected = options->rejected;
    pthread_mutex_init(&m->lock, NULL);
    m->interval_ms = options->interval_ms > 0 ? options->interval_ms : 2000;
    m->expiry_ms = options->expiry_ms > 0 ? options->expiry_ms : 10000;
    m->publish = options->address != NULL;
    if (!m->trust) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "members need the cluster secret");
        goto fail;
    }
    if (strlen(options->topic) >= sizeof(m->topic) ||
        strlen(options->instance_id) >= sizeof(m->instance_id) ||
        (options->address && strlen(options->address) >= sizeof(m->address))) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "members topic, id or address too long");
        goto fail;
    }
    snprintf(m->topic, sizeof(m->topic), "%s", options->topic);
    snprintf(m->instance_id, sizeof(m->instance_id), "%s", options->instance_id);
    snprintf(m->address, sizeof(m->address), "%s", options->address ? options->address : "");
    m->assigned_topics = calloc(MAX_ASSIGNED, sizeof(*m->assigned_topics));
    m->assigned_partitions = calloc(MAX_ASSIGNED, sizeof(*m->assigned_partitions));
    m->standby_topics = calloc(MAX_ASSIGNED, sizeof(*m->standby_topics));
    m->standby_partitions = calloc(MAX_ASSIGNED, sizeof(*m->standby_partitions));
    m->standby_wanted = calloc(MAX_ASSIGNED, sizeof(*m->standby_wanted));
    m->standby_replicas = (int)sl_config_get_int(config, "num.standby.replicas");
    if (!m->assigned_topics || !m->assigned_partitions || !m->standby_topics ||
        !m->standby_partitions || !m->standby_wanted) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    static const char *const producer_settings[] = {"acks", "all", "linger.ms", "0", NULL};
    const char *const consumer_settings[] = {
        "enable.auto.commit", "false", "enable.partition.eof", "true", "group.id", m->topic, NULL};
    m->producer = sl_kafka_client_new(RD_KAFKA_PRODUCER, bootstrap, config, &m->logger,
                                      producer_settings, m, NULL, errstr, errstr_size);
    if (!m->producer)
        goto fail;
    m->consumer = sl_kafka_client_new(RD_KAFKA_CONSUMER, bootstrap, config, &m->logger,
                                      consumer_settings, m, NULL, errstr, errstr_size);
    if (!m->consumer)
        goto fail;
    static const char *const compact[] = {"cleanup.policy", "compact", NULL};
    sl_topic_spec spec = {.name = m->topic,
                          .partitions = 1,
                          .replication_factor = options->replication_factor,
                          .configs = compact};
    if (sl_engine_ensure_topic(engine, &spec, errstr, errstr_size))
        goto fail;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, m->topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t code = rd_kafka_assign(m->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (code) {
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "assign %s: %s", m->topic,
                rd_kafka_err2str(code));
        goto fail;
    }
    /* A topic created a moment ago may have no leader yet: retry. */
    int64_t low = 0;
    rd_kafka_resp_err_t end_code = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int64_t deadline = sl_clock_mono_ms() + ADMIN_TIMEOUT_MS;;) {
        end_code = rd_kafka_query_watermark_offsets(m->consumer, m->topic, 0, &low,
                                                    &m->history_end, 5000);
        if (!end_code || sl_clock_mono_ms() >= deadline)
            break;
        struct timespec pause = {0, 200 * 1000000};
        nanosleep(&pause, NULL);
    }
    if (end_code) {
        /* Then the table is taken as read at once: a new instance may join
         * without warming up, nothing worse. */
        LOG(m, SL_LOG_WARN, "cannot read the end of %s: %s", m->topic, rd_kafka_err2str(end_code));
        m->history_end = 0;
    }
    m->read_to_end = m->history_end <= low;
    if (m->publish && engine && sl_engine_warming(engine))
        sl_engine_expect_warmup(engine);
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "cannot start the membership thread");
        goto fail;
    }
    m->thread_started = true;
    if (m->publish)
        LOG(m, SL_LOG_INFO, "instance %s advertises %s on %s", m->instance_id, m->address,
            m->topic);
    return m;
fail:
    sl_members_destroy(m);
    return NULL;
}

void sl_members_destroy(sl_members *m) {
    if (!m)
        return;
    sl_kafka_reader_stop(&m->stop, m->thread, m->thread_started, m->consumer);
    if (m->producer) {
        if (m->publish && m->thread_started) {
            /* A clean shutdown removes this instance at once. */
            char mac[SL_TRUST_RECORD_MAC_MAX];
            if (sl_trust_record_sign(m->trust, m->instance_id, strlen(m->instance_id), NULL, 0,
                                     mac, sizeof(mac)) == SL_OK)
                rd_kafka_producev(
                    m->producer, RD_KAFKA_V_TOPIC(m->topic),
                    RD_KAFKA_V_KEY(m->instance_id, strlen(m->instance_id)),
                    RD_KAFKA_V_VALUE(NULL, 0),
                    RD_KAFKA_V_HEADER(SL_TRUST_RECORD_HEADER, mac, (ssize_t)strlen(mac)),
                    RD_KAFKA_V_END);
        }
        if (rd_kafka_flush(m->producer, 5000))
            LOG(m, SL_LOG_WARN, "membership tombstone not confirmed in time");
        rd_kafka_destroy(m->producer);
    }
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++)
        if (m->entries[i].used)
            entry_clear(&m->entries[i]);
    pthread_mutex_destroy(&m->lock);
    free(m->assigned_topics);
    free(m->assigned_partitions);
    free(m->standby_topics);
    free(m->standby_partitions);
    free(m->standby_wanted);
    free(m);
}

static bool claims(const entry *e, const char *topic, int32_t partition) {
    json_t *list = json_object_get(e->assignment, topic);
    size_t i;
    json_t *value;
    json_array_foreach(list, i, value) {
        if (json_integer_value(value) == partition)
            return true;
    }
    return false;
}

sl_err sl_members_owner(sl_members *m, const char *topic, int32_t partition, char *instance_id,
                        char *address) {
    int64_t now = sl_clock_mono_ms();
    pthread_mutex_lock(&m->lock);
    const entry *best = NULL;
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++) {
        const entry *e = &m->entries[i];
        if (live(m, e, now) && claims(e, topic, partition) &&
            (!best || e->last_seen_ms > best->last_seen_ms))
            best = e;
    }
    if (best) {
        if (instance_id)
            snprintf(instance_id, SL_MEMBERS_MAX_ID, "%s", best->instance_id);
        if (address)
            snprintf(address, SL_MEMBERS_MAX_ADDRESS, "%s", best->address);
    }
    pthread_mutex_unlock(&m->lock);
    return best ? SL_OK : SL_ERR_NOT_FOUND;
}

size_t sl_members_standbys(sl_members *m, const char *topic, int32_t partition,
                           char (*ids)[SL_MEMBERS_MAX_ID], size_t max) {
    int64_t now = sl_clock_mono_ms();
    const entry *ring[SL_MEMBERS_MAX], *owner = NULL;
    size_t k = 0, n = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++) {
        const entry *e = &m->entries[i];
        if (!live(m, e, now) || !e->assignment)
            continue;
        ring[k++] = e;
        if (claims(e, topic, partition) && (!owner || e->last_seen_ms > owner->last_seen_ms))
            owner = e; /* as sl_members_owner */
    }
    qsort(ring, k, sizeof(ring[0]), by_instance_id);
    for (size_t o = 0; owner && o < k; o++) {
        if (ring[o] != owner)
            continue;
        /* update_standbys: distance 1..r from the owner in the ring */
        for (size_t d = 1; d < k && d <= (size_t)m->standby_replicas && n < max; d++)
            snprintf(ids[n++], SL_MEMBERS_MAX_ID, "%s", ring[(o + d) % k]->instance_id);
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}

size_t sl_members_live(sl_members *m) {
    int64_t now = sl_clock_mono_ms();
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < SL_MEMBERS_MAX; i++)
        n += live(m, &m->entries[i], now);
    pthread_mutex_unlock(&m->lock);
    return n;
}

char *sl_members_json(sl_members *m) {
    int64_t now = sl_clock_mono_ms();
    json_t *list = json_array();
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; list && i < SL_MEMBERS_MAX; i++) {
        const entry *e = &m->entries[i];
        if (!live(m, e, now))
            continue;
        json_array_append_new(list, json_pack("{s:s, s:s, s:I, s:O}", "instance", e->instance_id,
                                              "address", e->address, "age_ms",
                                              (json_int_t)(now - e->last_seen_ms), "assignment",
                                              e->assignment));
    }
    pthread_mutex_unlock(&m->lock);
    json_t *doc = list ? json_pack("{s:o}", "members", list) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}
