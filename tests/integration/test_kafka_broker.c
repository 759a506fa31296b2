/* Integration tests against the real Apache Kafka broker the harness started
 * (SLUICE_TEST_KAFKA_BOOTSTRAP). Skipped without it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/testutil.h"

static char errstr[1024];

/* The broker is Apache Kafka 3.9 from its jars, not librdkafka's mock: the
 * mock answers no DescribeConfigs for a broker. */
static void broker_is_apache_kafka_3_9(void **state) {
    (void)state;
    test_need_broker();
    const struct rd_kafka_metadata *metadata = NULL;
    assert_int_equal(rd_kafka_metadata(test_admin, 0, NULL, &metadata, 10000), 0);
    assert_true(metadata->broker_cnt >= 1);
    char broker_id[16], ibp[64], cluster_id[64] = "?";
    snprintf(broker_id, sizeof(broker_id), "%d", metadata->brokers[0].id);
    rd_kafka_metadata_destroy(metadata);
    char *cid = rd_kafka_clusterid(test_admin, 10000);
    if (cid) {
        snprintf(cluster_id, sizeof(cluster_id), "%s", cid);
        rd_kafka_mem_free(test_admin, cid);
    }
    sl_err err = sl_admin_describe_config(test_admin, RD_KAFKA_RESOURCE_BROKER, broker_id,
                                          "inter.broker.protocol.version", ibp, sizeof(ibp), 10000,
                                          errstr, sizeof(errstr));
    if (err)
        fail_msg("DescribeConfigs broker %s: %s", broker_id, errstr);
    char pv[64] = "?";
    sl_admin_describe_config(test_admin, RD_KAFKA_RESOURCE_BROKER, broker_id, "process.roles", pv,
                             sizeof(pv), 10000, errstr, sizeof(errstr));
    printf("# broker: Apache Kafka, inter.broker.protocol.version=%s, process.roles=%s, "
           "cluster.id=%s, broker.id=%s\n",
           ibp, pv, cluster_id, broker_id);
    assert_int_equal(strncmp(ibp, "3.9", 3), 0);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    int *partition = m->_private;
    *partition = m->err ? -2 : m->partition;
}

static void keys_land_where_the_java_client_puts_them(void **state) {
    (void)state;
    test_need_broker();
    char topic[128];
    test_unique_name(topic, sizeof(topic), "test-murmur2");
    sl_topic_spec spec = {.name = topic, .partitions = 12, .replication_factor = 1};
    if (sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)))
        fail_msg("create %s: %s", topic, errstr);

    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_PRODUCER, test_kafka_bootstrap(), NULL,
                                              &test_logger, errstr, sizeof(errstr));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(producer);
    int delivered[16];
    for (size_t i = 0; i < test_n_java_vectors; i++) {
        delivered[i] = -1;
        const char *key = test_java_vectors[i].key;
        assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                           RD_KAFKA_V_KEY(key, strlen(key)),
                                           RD_KAFKA_V_VALUE((void *)key, strlen(key)),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_OPAQUE(&delivered[i]), RD_KAFKA_V_END),
                         0);
    }
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);
    for (size_t i = 0; i < test_n_java_vectors; i++)
        assert_int_equal(delivered[i], test_java_vectors[i].p12);

    /* Round trip: each record comes back once, on the Java partition. */
    test_record records[32];
    int n = test_read_topic(test_kafka_bootstrap(), topic, "read_committed", records, 32, 30000);
    assert_int_equal(n, (int)test_n_java_vectors);
    for (size_t i = 0; i < test_n_java_vectors; i++) {
        int found = 0;
        for (int j = 0; j < n; j++) {
            if (strcmp(records[j].key, test_java_vectors[i].key) != 0)
                continue;
            found++;
            assert_string_equal(records[j].value, test_java_vectors[i].key);
            assert_int_equal(records[j].partition, test_java_vectors[i].p12);
        }
        assert_int_equal(found, 1);
    }
}

static void aborted_transaction_is_invisible_to_read_committed(void **state) {
    (void)state;
    test_need_broker();
    int committed = 0;
    int aborted_visible = test_aborted_records_visible(test_kafka_bootstrap(), &committed);
    assert_int_equal(aborted_visible, 0);
    assert_int_equal(committed, 2);
}

static void compacted_topic_reads_back_compact(void **state) {
    (void)state;
    test_need_broker();
    char topic[128], value[64];
    test_unique_name(topic, sizeof(topic), "test-changelog");
    const char *const compact[] = {"cleanup.policy", "compact", NULL};
    sl_topic_spec spec = {
        .name = topic, .partitions = 3, .replication_factor = 1, .configs = compact};
    if (sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)))
        fail_msg("create %s: %s", topic, errstr);
    assert_int_equal(sl_admin_describe_config(test_admin, RD_KAFKA_RESOURCE_TOPIC, topic,
                                              "cleanup.policy", value, sizeof(value), 10000, errstr,
                                              sizeof(errstr)),
                     SL_OK);
    assert_string_equal(value, "compact");
    /* Idempotent: ensuring the same definition again is fine. */
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)),
                     SL_OK);
}

static void existing_topic_that_differs_is_a_clear_error(void **state) {
    (void)state;
    test_need_broker();
    char topic[128];
    test_unique_name(topic, sizeof(topic), "test-mismatch");
    const char *const compact[] = {"cleanup.policy", "compact", NULL};
    const char *const delete_policy[] = {"cleanup.policy", "delete", NULL};
    sl_topic_spec spec = {
        .name = topic, .partitions = 3, .replication_factor = 1, .configs = compact};
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)),
                     SL_OK);
    spec.partitions = 6;
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)),
                     SL_ERR_TOPIC_MISMATCH);
    assert_non_null(strstr(errstr, "3 partitions, expected 6"));
    spec.partitions = 3;
    spec.configs = delete_policy;
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 15000, errstr, sizeof(errstr)),
                     SL_ERR_TOPIC_MISMATCH);
    assert_non_null(strstr(errstr, "cleanup.policy=compact, expected delete"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(broker_is_apache_kafka_3_9),
        cmocka_unit_test(keys_land_where_the_java_client_puts_them),
        cmocka_unit_test(aborted_transaction_is_invisible_to_read_committed),
        cmocka_unit_test(compacted_topic_reads_back_compact),
        cmocka_unit_test(existing_topic_that_differs_is_a_clear_error),
    };
    return cmocka_run_group_tests_name("kafka_broker", tests, test_broker_setup,
                                       test_broker_teardown);
}
