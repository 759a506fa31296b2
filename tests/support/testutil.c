/* testutil.c: shared test helpers (see testutil.h). */
#include "tests/support/testutil.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/kafka/client.h"

static void stderr_log(void *opaque, sl_log_level level, const char *component, const char *line) {
    (void)opaque;
    fprintf(stderr, "# [%s] %s: %s\n", sl_log_level_name(level), component, line);
}

const sl_logger test_logger = {.fn = stderr_log, .level = SL_LOG_WARN};

const test_java_vector test_java_vectors[] = {
    {"alice@example.com", 0, 0, 0, 12},
    {"bob@example.com", 2, 2, 8, 16},
    {"1:2", 2, 2, 2, 30},
    {"42:1000001", 0, 3, 3, 19},
    {"a", 1, 4, 4, 28},
    {"sluice", 1, 1, 1, 1},
    {"user-000017", 2, 5, 5, 5},
};
const size_t test_n_java_vectors = sizeof(test_java_vectors) / sizeof(test_java_vectors[0]);

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *test_kafka_bootstrap(void) {
    return env_nonempty("SLUICE_TEST_KAFKA_BOOTSTRAP");
}
const char *test_pg_dsn(void) {
    return env_nonempty("SLUICE_TEST_PG_DSN");
}

void test_unique_name(char *buf, size_t size, const char *prefix) {
    static atomic_int counter;
    snprintf(buf, size, "%s-%d-%d-%lld", prefix, (int)getpid(), atomic_fetch_add(&counter, 1),
             (long long)time(NULL));
}

int64_t test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

rd_kafka_t *test_producer(const char *bootstrap, const char *transactional_id) {
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &test_logger, errstr, sizeof(errstr));
    if (!conf)
        fail_msg("producer conf: %s", errstr);
    assert_int_equal(sl_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)),
                     SL_OK);
    assert_int_equal(sl_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)), SL_OK);
    if (transactional_id) {
        assert_int_equal(
            sl_kafka_conf_set(conf, "transactional.id", transactional_id, errstr, sizeof(errstr)),
            SL_OK);
        assert_int_equal(
            sl_kafka_conf_set(conf, "transaction.timeout.ms", "10000", errstr, sizeof(errstr)),
            SL_OK);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fail_msg("producer: %s", errstr);
    if (transactional_id) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(rk, 30000);
        if (error) {
            char why[512];
            snprintf(why, sizeof(why), "%s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rd_kafka_destroy(rk);
            fail_msg("init_transactions: %s", why);
        }
    }
    return rk;
}

long test_scan_topic(const char *bootstrap, const char *topic, const char *isolation,
                     test_visit_fn *visit, void *opaque, int timeout_ms) {
    char errstr[512], group[128];
    test_unique_name(group, sizeof(group), "test-reader");
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_CONSUMER, bootstrap, NULL, &test_logger, errstr, sizeof(errstr));
    if (!conf || rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "isolation.level", isolation, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr))) {
        fprintf(stderr, "# reader conf: %s\n", errstr);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "# reader: %s\n", errstr);
        return -1;
    }
    long n = -1;
    const struct rd_kafka_metadata *metadata = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t code = rd_kafka_metadata(rk, 0, rkt, &metadata, 10000);
    rd_kafka_topic_destroy(rkt);
    if (code || metadata->topic_cnt != 1 || metadata->topics[0].err) {
        fprintf(stderr, "# reader metadata for %s: %s\n", topic,
                rd_kafka_err2str(code ? code : metadata->topics[0].err));
        goto done;
    }
    int partitions = metadata->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *assignment = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(assignment, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, assignment);
    rd_kafka_topic_partition_list_destroy(assignment);
    char *at_end = calloc((size_t)partitions, 1);
    int eofs = 0;
    n = 0;
    int64_t deadline = test_now_ms() + timeout_ms;
    while (eofs < partitions) {
        if (test_now_ms() > deadline) {
            fprintf(stderr, "# reader: timed out on %s (%d of %d partitions at end)\n", topic, eofs,
                    partitions);
            n = -1;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!at_end[m->partition]) {
                at_end[m->partition] = 1;
                eofs++;
            }
        } else if (m->err) {
            fprintf(stderr, "# reader: %s\n", rd_kafka_message_errstr(m));
        } else {
            visit(m, opaque);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    free(at_end);
done:
    if (metadata)
        rd_kafka_metadata_destroy(metadata);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

typedef struct read_into {
    test_record *out;
    int max, n;
} read_into;

static void copy_record(const rd_kafka_message_t *m, void *opaque) {
    read_into *into = opaque;
    if (into->n >= into->max)
        return;
    test_record *r = &into->out[into->n++];
    r->partition = m->partition;
    r->offset = m->offset;
    snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
    snprintf(r->value, sizeof(r->value), "%.*s", (int)m->len, (const char *)m->payload);
}

int test_read_topic(const char *bootstrap, const char *topic, const char *isolation,
                    test_record *out, int max, int timeout_ms) {
    read_into into = {.out = out, .max = max};
    long n = test_scan_topic(bootstrap, topic, isolation, copy_record, &into, timeout_ms);
    return n < 0 ? -1 : into.n;
}

static bool produce_in_txn(rd_kafka_t *rk, const char *topic, const char *value, bool commit) {
    rd_kafka_error_t *error = rd_kafka_begin_transaction(rk);
    if (!error) {
        rd_kafka_resp_err_t code =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("k", 1),
                              RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (code) {
            fprintf(stderr, "# produce: %s\n", rd_kafka_err2str(code));
            return false;
        }
        /* Make sure the record reached the log before an abort, so the test
         * proves the abort hides it rather than that it was never sent. */
        rd_kafka_flush(rk, 10000);
        error =
            commit ? rd_kafka_commit_transaction(rk, 30000) : rd_kafka_abort_transaction(rk, 30000);
    }
    if (error) {
        fprintf(stderr, "# transaction: %s\n", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return false;
    }
    return true;
}

int test_aborted_records_visible(const char *bootstrap, int *committed_seen) {
    char topic[128], txn_id[128], errstr[512];
    test_unique_name(topic, sizeof(topic), "test-txn");
    test_unique_name(txn_id, sizeof(txn_id), "test-txn-producer");
    rd_kafka_t *producer = test_producer(bootstrap, txn_id);
    /* Create the topic through the producer's admin API (single partition). */
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 1, -1, errstr, sizeof(errstr));
    rd_kafka_queue_t *queue = rd_kafka_queue_new(producer);
    rd_kafka_CreateTopics(producer, &nt, 1, NULL, queue);
    rd_kafka_event_t *event = rd_kafka_queue_poll(queue, 15000);
    if (event)
        rd_kafka_event_destroy(event);
    rd_kafka_queue_destroy(queue);
    rd_kafka_NewTopic_destroy(nt);

    bool ok = produce_in_txn(producer, topic, "committed-1", true) &&
              produce_in_txn(producer, topic, "aborted", false) &&
              produce_in_txn(producer, topic, "committed-2", true);
    rd_kafka_destroy(producer);
    if (!ok)
        return -1;
    test_record records[16];
    int n = test_read_topic(bootstrap, topic, "read_committed", records, 16, 30000);
    if (n < 0)
        return -1;
    int aborted = 0, committed = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(records[i].value, "aborted") == 0)
            aborted++;
        else if (strncmp(records[i].value, "committed-", 10) == 0)
            committed++;
    }
    *committed_seen = committed;
    return aborted;
}

sl_jwt_keys *test_jwt_keys_new(const char *dir, const char *name, char *path, size_t path_size) {
    char errstr[256];
    snprintf(path, path_size, "%s/%s.pem", dir, name);
    sl_jwt_keys *keys = NULL;
    if (sl_jwt_key_generate(path, SL_JWT_RS256, NULL, errstr, sizeof(errstr)) == SL_OK)
        keys = sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr));
    if (!keys)
        fprintf(stderr, "# signing key %s: %s\n", path, errstr);
    return keys;
}
