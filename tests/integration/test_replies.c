/*
 * The gateway's reply path against the real broker: Reply records produced
 * (inside transactions, as processors do) to the reply topic with the
 * instance id as key reach the waiter of their correlation id; unknown ids
 * are dropped; a missing reply times out and a late one leaks nothing; and
 * sl_replies_request round-trips a command through a stand-in processor.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/kafka/admin.h"
#include "processor/gateway/replies.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/testutil.h"

#define REPLY_PARTITIONS 3

static char errstr[1024];

typedef struct fixture {
    char topic[128];
    char instance_id[64];
    sl_replies *replies;
    rd_kafka_t *producer; /* transactional, like a processor's */
} fixture;

static void fixture_init(fixture *f, const char *name) {
    test_unique_name(f->topic, sizeof(f->topic), name);
    strcat(f->topic, "-replies");
    test_unique_name(f->instance_id, sizeof(f->instance_id), "instance");
    test_broker_create_topic(test_admin, f->topic, REPLY_PARTITIONS, 1, NULL);
    f->replies = sl_replies_new(NULL, test_kafka_bootstrap(), f->topic, f->instance_id, 8,
                                &test_logger, errstr, sizeof(errstr));
    if (!f->replies)
        fail_msg("sl_replies_new: %s", errstr);
    char txn[160];
    snprintf(txn, sizeof(txn), "%s-txn", f->topic);
    f->producer = test_producer(test_kafka_bootstrap(), txn);
}

static void fixture_free(fixture *f) {
    sl_replies_destroy(f->replies);
    rd_kafka_destroy(f->producer);
}

/* Produce a Reply the way a processor does: in a transaction, keyed by the
 * reply key, partitioned by murmur2. */
static void produce_reply(rd_kafka_t *producer, const char *topic, const char *key,
                          const char *correlation_id, const char *type) {
    Sluice__V1__Reply reply = SLUICE__V1__REPLY__INIT;
    reply.correlation_id = (char *)correlation_id;
    reply.command_id = "cmd-42";
    reply.type = (char *)type;
    uint8_t payload[] = {1, 2, 3};
    reply.payload.data = payload;
    reply.payload.len = sizeof(payload);
    size_t len = sluice__v1__reply__get_packed_size(&reply);
    uint8_t *buf = malloc(len ? len : 1);
    sluice__v1__reply__pack(&reply, buf);
    assert_null(rd_kafka_begin_transaction(producer));
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(buf, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END),
                     0);
    rd_kafka_error_t *error = rd_kafka_commit_transaction(producer, 30000);
    if (error) {
        char why[256];
        snprintf(why, sizeof(why), "%s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        fail_msg("commit: %s", why);
    }
}

static bool await_stat(sl_replies *replies, size_t offset, uint64_t at_least, int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    while (test_now_ms() < deadline) {
        sl_replies_stats stats;
        sl_replies_stats_get(replies, &stats);
        if (*(uint64_t *)((char *)&stats + offset) >= at_least)
            return true;
        usleep(20000);
    }
    return false;
}

static void a_reply_reaches_the_waiter_of_its_correlation_id(void **state) {
    (void)state;
    test_need_broker();
    fixture f;
    fixture_init(&f, "replies-reach");
    sl_replies_stats stats;
    sl_replies_stats_get(f.replies, &stats);
    assert_int_equal(stats.partition, sl_replies_partition_of(f.instance_id, REPLY_PARTITIONS));
    sl_waiters *w = sl_replies_waiters(f.replies);
    char first[SL_CORRELATION_ID_SIZE], second[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, first), SL_OK);
    assert_int_equal(sl_waiters_register(w, second), SL_OK);
    /* answered in the opposite order: each reply finds its own waiter */
    produce_reply(f.producer, f.topic, f.instance_id, second, "sluice.v1.Second");
    produce_reply(f.producer, f.topic, f.instance_id, first, "sluice.v1.First");
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, first, 30000, &reply), SL_OK);
    assert_string_equal(reply->correlation_id, first);
    assert_string_equal(reply->type, "sluice.v1.First");
    assert_string_equal(reply->command_id, "cmd-42");
    assert_int_equal(reply->payload.len, 3);
    sl_reply_free(reply);
    assert_int_equal(sl_waiters_wait(w, second, 30000, &reply), SL_OK);
    assert_string_equal(reply->type, "sluice.v1.Second");
    sl_reply_free(reply);
    /* The consumer thread counts a delivery after handing the reply over,
     * so the waiter can return first: wait for the count. */
    assert_true(await_stat(f.replies, offsetof(sl_replies_stats, delivered), 2, 10000));
    sl_replies_stats_get(f.replies, &stats);
    assert_int_equal(stats.delivered, 2);
    assert_int_equal(stats.dropped, 0);
    fixture_free(&f);
}

static void unknown_correlation_ids_are_dropped(void **state) {
    (void)state;
    test_need_broker();
    fixture f;
    fixture_init(&f, "replies-unknown");
    sl_waiters *w = sl_replies_waiters(f.replies);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    produce_reply(f.producer, f.topic, f.instance_id, "00000000ffffffffffffffffffffffffffffffff",
                  "sluice.v1.Nobody");
    produce_reply(f.producer, f.topic, f.instance_id, "not-even-an-id", "sluice.v1.Nobody");
    produce_reply(f.producer, f.topic, f.instance_id, id, "sluice.v1.Mine");
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, id, 30000, &reply), SL_OK);
    assert_string_equal(reply->type, "sluice.v1.Mine");
    sl_reply_free(reply);
    sl_replies_stats stats;
    sl_replies_stats_get(f.replies, &stats);
    assert_int_equal(stats.dropped, 2); /* read before the matching reply, same partition */
    assert_int_equal(stats.delivered, 1);
    fixture_free(&f);
}

static void a_missing_reply_times_out_and_a_late_one_is_dropped(void **state) {
    (void)state;
    test_need_broker();
    fixture f;
    fixture_init(&f, "replies-timeout");
    sl_waiters *w = sl_replies_waiters(f.replies);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, id, 300, &reply), SL_ERR_TIMEOUT);
    assert_null(reply);
    assert_int_equal(sl_waiters_in_use(w), 0);
    produce_reply(f.producer, f.topic, f.instance_id, id, "sluice.v1.Late");
    assert_true(await_stat(f.replies, offsetof(sl_replies_stats, dropped), 1, 30000));
    sl_replies_stats stats;
    sl_replies_stats_get(f.replies, &stats);
    assert_int_equal(stats.delivered, 0);
    fixture_free(&f); /* LeakSanitizer checks the late reply was freed */
}

/* ---- sl_replies_request with a stand-in processor ----------------------- */

static sl_err encode_meta(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                          size_t *value_len) {
    (void)opaque;
    /* the "command" is just its meta, enough for the stand-in processor */
    *value_len = sluice__v1__command_meta__get_packed_size(meta);
    *value = malloc(*value_len ? *value_len : 1);
    if (!*value)
        return SL_ERR_NOMEM;
    sluice__v1__command_meta__pack(meta, *value);
    return SL_OK;
}

typedef struct request_call {
    sl_replies *replies;
    const char *commands;
    sl_err result;
    Sluice__V1__Reply *reply;
    char correlation_id[SL_CORRELATION_ID_SIZE];
} request_call;

static void *do_request(void *arg) {
    request_call *call = arg;
    call->result = sl_replies_request(call->replies, call->commands, "alice@example.com", 17,
                                      encode_meta, NULL, 30000, &call->reply, call->correlation_id);
    return NULL;
}

static void a_request_round_trips_through_a_processor(void **state) {
    (void)state;
    test_need_broker();
    fixture f;
    fixture_init(&f, "replies-request");
    char commands[128];
    test_unique_name(commands, sizeof(commands), "replies-commands");
    test_broker_create_topic(test_admin, commands, 2, 1, NULL);
    request_call call = {.replies = f.replies, .commands = commands};
    pthread_t thread;
    pthread_create(&thread, NULL, do_request, &call);
    /* the processor: read the command, answer where its meta says */
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, test_kafka_bootstrap(), NULL,
                                              &test_logger, errstr, sizeof(errstr));
    assert_non_null(conf);
    assert_int_equal(sl_kafka_conf_set(conf, "group.id", commands, errstr, sizeof(errstr)), SL_OK);
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    assert_non_null(consumer);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(list, commands, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_topic_partition_list_add(list, commands, 1)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(consumer, list), 0);
    rd_kafka_topic_partition_list_destroy(list);
    Sluice__V1__CommandMeta *meta = NULL;
    int32_t command_partition = -1;
    for (int64_t deadline = test_now_ms() + 30000; !meta && test_now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 200);
        if (m && !m->err) {
            meta = sluice__v1__command_meta__unpack(NULL, m->len, m->payload);
            command_partition = m->partition;
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    assert_non_null(meta);
    assert_string_equal(meta->reply_to, f.topic);
    assert_string_equal(meta->reply_key, f.instance_id);
    assert_true(meta->issued_at_ms > 0);
    assert_int_equal(strlen(meta->correlation_id), SL_CORRELATION_ID_SIZE - 1);
    /* the command went where murmur2 puts its key */
    assert_int_equal(command_partition, sl_replies_partition_of("alice@example.com", 2));
    produce_reply(f.producer, meta->reply_to, meta->reply_key, meta->correlation_id,
                  "sluice.v1.Done");
    pthread_join(thread, NULL);
    assert_int_equal(call.result, SL_OK);
    assert_string_equal(call.reply->type, "sluice.v1.Done");
    assert_string_equal(call.reply->correlation_id, meta->correlation_id);
    assert_string_equal(call.correlation_id, meta->correlation_id);
    sl_reply_free(call.reply);
    sluice__v1__command_meta__free_unpacked(meta, NULL);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    sl_replies_stats stats;
    sl_replies_stats_get(f.replies, &stats);
    assert_int_equal(stats.produced, 1);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_reply_reaches_the_waiter_of_its_correlation_id),
        cmocka_unit_test(unknown_correlation_ids_are_dropped),
        cmocka_unit_test(a_missing_reply_times_out_and_a_late_one_is_dropped),
        cmocka_unit_test(a_request_round_trips_through_a_processor),
    };
    return cmocka_run_group_tests(tests, test_broker_setup, test_broker_teardown);
}
