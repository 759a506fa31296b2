/*
 * replies.c: the waiter table and the reply consumer (see replies.h).
 *
 * Waiter slots: a fixed array, a stack of free indices, one mutex and one
 * condition variable per slot (on CLOCK_MONOTONIC). A correlation id starts
 * with its slot index in hex, so a reply finds its slot in O(1); the 128
 * random bits after it make the id unguessable and make a stale id (a late
 * reply for a slot that was reused) never match.
 *
 *   free --register--> waiting --deliver/fail--> answered
 *   waiting/answered --wait returns (reply, error or timeout), cancel--> free
 *
 * The consumer thread owns the consumer; it also serves the producer's
 * delivery reports (a failed produce wakes its waiter with SL_ERR_KAFKA).
 */
#include "processor/gateway/replies.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "processor/base/clock.h"
#include "processor/base/trace.h"
#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"

#define ADMIN_TIMEOUT_MS 30000

void sl_reply_free(Sluice__V1__Reply *reply) {
    if (reply)
        sluice__v1__reply__free_unpacked(reply, NULL);
}

/* ---- waiters ------------------------------------------------------------- */

typedef enum slot_state { SLOT_FREE, SLOT_WAITING, SLOT_ANSWERED } slot_state;

typedef struct slot {
    slot_state state;
    char id[SL_CORRELATION_ID_SIZE];
    Sluice__V1__Reply *reply;
    sl_err error;
    pthread_cond_t cond;
} slot;

struct sl_waiters {
    pthread_mutex_t lock;
    size_t capacity;
    slot *slots;
    size_t *free_stack;
    size_t n_free;
};

sl_waiters *sl_waiters_new(size_t capacity) {
    if (capacity == 0 || capacity > 1000000)
        return NULL;
    sl_waiters *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->slots = calloc(capacity, sizeof(slot));
    w->free_stack = calloc(capacity, sizeof(size_t));
    if (!w->slots || !w->free_stack) {
        free(w->slots);
        free(w->free_stack);
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    for (size_t i = 0; i < capacity; i++) {
        pthread_cond_init(&w->slots[i].cond, &attr);
        w->free_stack[i] = capacity - 1 - i;
    }
    pthread_condattr_destroy(&attr);
    w->capacity = capacity;
    w->n_free = capacity;
    return w;
}

void sl_waiters_destroy(sl_waiters *w) {
    if (!w)
        return;
    for (size_t i = 0; i < w->capacity; i++) {
        sl_reply_free(w->slots[i].reply);
        pthread_cond_destroy(&w->slots[i].cond);
    }
    pthread_mutex_destroy(&w->lock);
    free(w->slots);
    free(w->free_stack);
    free(w);
}

/* The slot `id` names, if it is registered under exactly that id. Called
 * with the lock held. */
static slot *find(sl_waiters *w, const char *id) {
    if (!id || strlen(id) != SL_CORRELATION_ID_SIZE - 1)
        return NULL;
    size_t index = 0;
    for (int i = 0; i < 8; i++) {
        char c = id[i];
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (digit < 0)
            return NULL;
        index = index * 16 + (size_t)digit;
    }
    if (index >= w->capacity)
        return NULL;
    slot *s = &w->slots[index];
    return s->state != SLOT_FREE && strcmp(s->id, id) == 0 ? s : NULL;
}

static void release(sl_waiters *w, slot *s) {
    sl_reply_free(s->reply);
    s->reply = NULL;
    s->state = SLOT_FREE;
    s->id[0] = '\0';
    w->free_stack[w->n_free++] = (size_t)(s - w->slots);
}

sl_err sl_waiters_register(sl_waiters *w, char id[SL_CORRELATION_ID_SIZE]) {
    unsigned char random[16];
    if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random))
        return SL_ERR_IO;
    pthread_mutex_lock(&w->lock);
    if (w->n_free == 0) {
        pthread_mutex_unlock(&w->lock);
        return SL_ERR_FULL;
    }
    size_t index = w->free_stack[--w->n_free];
    slot *s = &w->slots[index];
    snprintf(s->id, sizeof(s->id), "%08zx", index);
    for (int i = 0; i < 16; i++)
        snprintf(s->id + 8 + 2 * i, 3, "%02x", random[i]);
    s->state = SLOT_WAITING;
    s->error = SL_OK;
    s->reply = NULL;
    memcpy(id, s->id, SL_CORRELATION_ID_SIZE);
    pthread_mutex_unlock(&w->lock);
    return SL_OK;
}

static bool answer(sl_waiters *w, const char *id, Sluice__V1__Reply *reply, sl_err error) {
    pthread_mutex_lock(&w->lock);
    slot *s = find(w, id);
    bool ok = s && s->state == SLOT_WAITING;
    if (ok) {
        s->reply = reply;
        s->error = error;
        s->state = SLOT_ANSWERED;
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return ok;
}

bool sl_waiters_deliver(sl_waiters *w, const char *id, Sluice__V1__Reply *reply) {
    return answer(w, id, reply, SL_OK);
}

bool sl_waiters_fail(sl_waiters *w, const char *id, sl_err err) {
    return answer(w, id, NULL, err ? err : SL_ERR_KAFKA);
}

sl_err sl_waiters_wait(sl_waiters *w, const char *id, int timeout_ms, Sluice__V1__Reply **reply) {
    *reply = NULL;
    struct timespec deadline = sl_clock_mono_deadline(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&w->lock);
    slot *s = find(w, id);
    if (!s) {
        pthread_mutex_unlock(&w->lock);
        return SL_ERR_NOT_FOUND;
    }
    while (s->state == SLOT_WAITING)
        if (pthread_cond_timedwait(&s->cond, &w->lock, &deadline) != 0 && s->state == SLOT_WAITING)
            break; /* timed out */
    sl_err err = SL_ERR_TIMEOUT;
    if (s->state == SLOT_ANSWERED) {
        err = s->error;
        *reply = s->reply;
        s->reply = NULL;
    }
    release(w, s);
    pthread_mutex_unlock(&w->lock);
    return err;
}

void sl_waiters_cancel(sl_waiters *w, const char *id) {
    pthread_mutex_lock(&w->lock);
    slot *s = find(w, id);
    if (s)
        release(w, s);
    pthread_mutex_unlock(&w->lock);
}

size_t sl_waiters_in_use(sl_waiters *w) {
    pthread_mutex_lock(&w->lock);
    size_t n = w->capacity - w->n_free;
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* ---- the reply consumer -------------------------------------------------- */

struct sl_replies {
    sl_logger logger; /* first member: the clients' opaque is the object, and
                         librdkafka's log callback reads it as an sl_logger */
    sl_waiters *waiters;
    rd_kafka_t *consumer, *producer;
    char *topic, *instance_id;
    int32_t partition;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_uint_fast64_t delivered, dropped, undecodable, produced;
};

#define LOG(r, level, ...) sl_log(&(r)->logger, level, "replies", __VA_ARGS__)

int32_t sl_replies_partition_of(const char *key, int32_t partitions) {
    return rd_kafka_msg_partitioner_murmur2_random(NULL, key, strlen(key), partitions, NULL, NULL);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    sl_replies *r = opaque;
    char *id = m->_private;
    if (m->err) {
        LOG(r, SL_LOG_WARN, "command to %s not produced: %s", rd_kafka_topic_name(m->rkt),
            rd_kafka_err2str(m->err));
        if (id)
            sl_waiters_fail(r->waiters, id, SL_ERR_KAFKA);
    }
    free(id);
}

static void handle(sl_replies *r, const rd_kafka_message_t *m) {
    Sluice__V1__Reply *reply =
        m->payload ? sluice__v1__reply__unpack(NULL, m->len, m->payload) : NULL;
    if (!reply) {
        atomic_fetch_add(&r->undecodable, 1);
        LOG(r, SL_LOG_WARN, "%s [%d] offset %lld: not a sluice.v1.Reply; dropped", r->topic,
            m->partition, (long long)m->offset);
        return;
    }
    /* Counted before the waiter wakes, so a waiter that reads the stats
     * right after its reply sees it counted (test_replies raced this). */
    atomic_fetch_add(&r->delivered, 1);
    if (sl_waiters_deliver(r->waiters, reply->correlation_id, reply))
        return;
    atomic_fetch_sub(&r->delivered, 1);
    /* Unknown, or the waiter gave up (timeout): the outcome is durable on
     * the events topic anyway. */
    atomic_fetch_add(&r->dropped, 1);
    LOG(r, SL_LOG_DEBUG, "reply at offset %lld has no waiter; dropped", (long long)m->offset);
    sl_reply_free(reply);
}

static void *consume(void *arg) {
    sl_replies *r = arg;
    while (!atomic_load(&r->stop)) {
        rd_kafka_poll(r->producer, 0);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                LOG(r, SL_LOG_WARN, "consumer: %s", rd_kafka_message_errstr(m));
        } else {
            handle(r, m);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* The producer's delivery reports count and free what was sent. */
static void set_delivery_callback(rd_kafka_conf_t *conf, void *opaque) {
    (void)opaque;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
}

sl_replies *sl_replies_new(const sl_config *config, const char *bootstrap, const char *reply_topic,
                           const char *instance_id, size_t max_waiters, const sl_logger *logger,
                           char *errstr, size_t errstr_size) {
    sl_replies *r = calloc(1, sizeof(*r));
    if (!r) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->logger = *logger;
    r->topic = strdup(reply_topic);
    r->instance_id = strdup(instance_id);
    r->waiters = sl_waiters_new(max_waiters);
    if (!r->topic || !r->instance_id || !r->waiters) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory (or 0 waiters)");
        goto fail;
    }
    static const char *const producer_settings[] = {"enable.idempotence", "true", "acks", "all",
                                                    NULL};
    /* Assign-only: librdkafka wants a group.id for assign() although this
     * consumer never joins the group nor commits. */
    const char *const consumer_settings[] = {
        "isolation.level", "read_committed", "enable.auto.commit", "false", "enable.partition.eof",
        "false",           "group.id",       reply_topic,          NULL};
    r->producer = sl_kafka_client_new(RD_KAFKA_PRODUCER, bootstrap, config, &r->logger,
                                      producer_settings, r, set_delivery_callback, errstr,
                                      errstr_size);
    if (!r->producer)
        goto fail;
    r->consumer = sl_kafka_client_new(RD_KAFKA_CONSUMER, bootstrap, config, &r->logger,
                                      consumer_settings, r, NULL, errstr, errstr_size);
    if (!r->consumer)
        goto fail;
    int partitions = 0;
    char why[512];
    sl_err err = sl_admin_topic_partitions(r->producer, reply_topic, ADMIN_TIMEOUT_MS, &partitions,
                                           why, sizeof(why));
    if (err) {
        sl_fail(errstr, errstr_size, err, "reply topic %s: %s", reply_topic,
                err == SL_ERR_NOT_FOUND ? "does not exist" : why);
        goto fail;
    }
    r->partition = sl_replies_partition_of(instance_id, partitions);
    /* Start at the partition's end as it is now: replies for an earlier
     * incarnation of this instance have no waiter, and a concrete offset
     * (not OFFSET_END, resolved later) makes "a reply produced after
     * sl_replies_new returned is seen" hold. */
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t code;
    /* A topic created a moment ago may have no leader yet: retry that. */
    for (int attempt = 0;; attempt++) {
        code = rd_kafka_query_watermark_offsets(r->consumer, reply_topic, r->partition, &low, &high,
                                                ADMIN_TIMEOUT_MS);
        if (!code || attempt >= 20 ||
            (code != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
             code != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
             code != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART))
            break;
        struct timespec pause = {0, 250 * 1000000L};
        nanosleep(&pause, NULL);
    }
    if (code) {
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "watermarks of %s [%d]: %s", reply_topic,
                r->partition, rd_kafka_err2str(code));
        goto fail;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, reply_topic, r->partition)->offset = high;
    code = rd_kafka_assign(r->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (code) {
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "assign: %s", rd_kafka_err2str(code));
        goto fail;
    }
    if (pthread_create(&r->thread, NULL, consume, r) != 0) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "cannot start the reply thread");
        goto fail;
    }
    r->thread_started = true;
    LOG(r, SL_LOG_INFO, "reading replies from %s [%d] at offset %lld", reply_topic, r->partition,
        (long long)high);
    return r;
fail:
    sl_replies_destroy(r);
    return NULL;
}

void sl_replies_destroy(sl_replies *r) {
    if (!r)
        return;
    sl_kafka_reader_stop(&r->stop, r->thread, r->thread_started, r->consumer);
    if (r->producer) {
        rd_kafka_flush(r->producer, 5000);
        /* Whatever is still queued fails now; its delivery report frees
         * the message's id. */
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(r->producer, 0);
        rd_kafka_destroy(r->producer);
    }
    sl_waiters_destroy(r->waiters);
    free(r->topic);
    free(r->instance_id);
    free(r);
}

sl_waiters *sl_replies_waiters(sl_replies *r) {
    return r->waiters;
}

void sl_replies_stats_get(sl_replies *r, sl_replies_stats *stats) {
    stats->delivered = atomic_load(&r->delivered);
    stats->dropped = atomic_load(&r->dropped);
    stats->undecodable = atomic_load(&r->undecodable);
    stats->produced = atomic_load(&r->produced);
    stats->partition = r->partition;
}

sl_err sl_command_pack(const void *message, void **value, size_t *value_len) {
    size_t len = protobuf_c_message_get_packed_size(message);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return SL_ERR_NOMEM;
    protobuf_c_message_pack(message, buf);
    *value = buf;
    *value_len = len;
    return SL_OK;
}

sl_err sl_replies_request(sl_replies *r, const char *topic, const void *key, size_t key_len,
                          sl_command_encode_fn *encode, void *opaque, int timeout_ms,
                          Sluice__V1__Reply **reply, char correlation_id[SL_CORRELATION_ID_SIZE]) {
    *reply = NULL;
    char id[SL_CORRELATION_ID_SIZE];
    sl_err err = sl_waiters_register(r->waiters, id);
    if (err)
        return err;
    if (correlation_id)
        memcpy(correlation_id, id, sizeof(id));
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.correlation_id = id;
    meta.reply_to = r->topic;
    meta.reply_key = r->instance_id;
    meta.issued_at_ms = sl_clock_wall_ms();
    /* The command is part of the trace of the request it serves: in its
     * meta for the processor, and as a Kafka header for any consumer. */
    const char *trace = sl_trace_current();
    if (trace)
        meta.traceparent = (char *)trace;
    void *value = NULL;
    size_t value_len = 0;
    if ((err = encode(opaque, &meta, &value, &value_len))) {
        sl_waiters_cancel(r->waiters, id);
        return err;
    }
    char *msg_id = strdup(id);
    rd_kafka_headers_t *headers = NULL;
    if (trace) {
        headers = rd_kafka_headers_new(1);
        rd_kafka_header_add(headers, SL_TRACEPARENT_HEADER, -1, trace, -1);
    }
    rd_kafka_resp_err_t code =
        msg_id ? rd_kafka_producev(
                     r->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                     RD_KAFKA_V_VALUE(value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                     RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(msg_id), RD_KAFKA_V_END)
               : RD_KAFKA_RESP_ERR__FAIL;
    if (code) {
        if (headers) /* taken only on success */
            rd_kafka_headers_destroy(headers);
        free(value); /* not taken on failure */
        free(msg_id);
        sl_waiters_cancel(r->waiters, id);
        LOG(r, SL_LOG_WARN, "cannot produce to %s: %s", topic, rd_kafka_err2str(code));
        return code == RD_KAFKA_RESP_ERR__QUEUE_FULL ? SL_ERR_FULL : SL_ERR_KAFKA;
    }
    atomic_fetch_add(&r->produced, 1);
    return sl_waiters_wait(r->waiters, id, timeout_ms, reply);
}
