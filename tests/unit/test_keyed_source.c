/*
 * Unit tests: a keyed source (sl_topology_set_keyed) on librdkafka's mock
 * cluster. Records are produced to explicit partitions, as a producer with
 * another partitioner (or `kcat -p`) would; the engine must process only
 * those whose key murmur2-hashes to the partition they arrived on and
 * dead-letter the others with reason "wrong_partition". A source that is
 * not keyed processes every record where it lands (unchanged behaviour).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "processor/cmd/config_groups.h"
#include "processor/engine/engine.h"
#include "processor/kafka/client.h"
#include "tests/support/testutil.h"

#define APP_ID      "keyed"
#define INPUT       "keyed.input"
#define PARTITIONS  4
#define N_KEYS      16
#define DEADLINE_MS 20000

typedef struct fixture {
    char dir[64];
    sl_embedded_cluster *cluster;
    sl_config *config;
    sl_topology *topology;
    sl_engine *engine;
    rd_kafka_t *driver;
    long processed;
    long processed_elsewhere; /* processed on another partition than its key's */
} fixture;

static sl_err count(sl_ctx *ctx, const sl_record *record, void *opaque) {
    (void)ctx;
    fixture *f = opaque;
    f->processed++;
    if (rd_kafka_msg_partitioner_murmur2_random(NULL, record->key, record->key_len, PARTITIONS,
                                                NULL, NULL) != record->partition)
        f->processed_elsewhere++;
    return SL_OK;
}

static int setup(fixture *f, bool keyed) {
    char errstr[512];
    snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-keyed-XXXXXX");
    char path[128];
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(path, sizeof(path), "%s/%s", f->dir, APP_ID); /* the caller owns state.dir */
    if (mkdir(path, 0755) != 0)
        return -1;
    f->cluster = sl_embedded_cluster_new(1, &test_logger, errstr, sizeof(errstr));
    if (!f->cluster)
        return -1;
    bool created;
    const char *topics[] = {INPUT, APP_ID "-dlq"};
    for (size_t i = 0; i < 2; i++)
        if (sl_embedded_cluster_create_topic(f->cluster, topics[i], PARTITIONS, &created, errstr,
                                             sizeof(errstr)))
            return -1;
    const char *bootstrap = sl_embedded_cluster_bootstraps(f->cluster);
    f->config = sl_config_new(sl_config_groups, NULL, 0);
    if (!f->config || sl_config_set(f->config, "application.id", APP_ID, errstr, sizeof(errstr)) ||
        sl_config_set(f->config, "state.dir", f->dir, errstr, sizeof(errstr)) ||
        sl_config_set(f->config, "processing.guarantee", "at_least_once", errstr,
                      sizeof(errstr)) ||
        sl_config_set(f->config, "commit.interval.ms", "50", errstr, sizeof(errstr)))
        return -1;
    f->topology = sl_topology_new();
    if (!f->topology || sl_topology_add_source(f->topology, "data", INPUT, NULL, NULL) ||
        (keyed && sl_topology_set_keyed(f->topology, "data")) ||
        sl_topology_add_processor(f->topology, "count", "data", count, f))
        return -1;
    f->engine = sl_engine_new(f->config, f->topology, bootstrap, &test_logger, errstr,
                              sizeof(errstr));
    if (!f->engine)
        return -1;
    sl_engine_use_embedded_cluster(f->engine, f->cluster);
    if (sl_engine_start(f->engine, errstr, sizeof(errstr))) {
        fprintf(stderr, "# engine start: %s\n", errstr);
        return -1;
    }
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &test_logger, errstr, sizeof(errstr));
    if (!conf)
        return -1;
    f->driver = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!f->driver) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    return 0;
}

static void teardown(fixture *f) {
    if (f->engine) {
        sl_engine_close(f->engine);
        sl_engine_destroy(f->engine);
    }
    if (f->driver)
        rd_kafka_destroy(f->driver);
    sl_topology_destroy(f->topology);
    sl_config_destroy(f->config);
    sl_embedded_cluster_destroy(f->cluster);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", f->dir);
}

/* Every key to every partition: N_KEYS * PARTITIONS records, N_KEYS of them
 * on their key's own partition. */
static long produce_everywhere(fixture *f) {
    long n = 0;
    for (int k = 0; k < N_KEYS; k++) {
        char key[16];
        int key_len = snprintf(key, sizeof(key), "key-%d", k);
        for (int32_t p = 0; p < PARTITIONS; p++, n++)
            assert_int_equal(rd_kafka_producev(f->driver, RD_KAFKA_V_TOPIC(INPUT),
                                               RD_KAFKA_V_PARTITION(p),
                                               RD_KAFKA_V_KEY(key, (size_t)key_len),
                                               RD_KAFKA_V_VALUE("v", 1),
                                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                               RD_KAFKA_V_END),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(f->driver, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    return n;
}

static sl_engine_stats run_until_consumed(fixture *f, long produced) {
    sl_engine_stats stats;
    for (int64_t deadline = test_now_ms() + DEADLINE_MS; test_now_ms() < deadline;) {
        assert_int_equal(sl_engine_poll(f->engine, 20), SL_OK);
        sl_engine_stats_get(f->engine, &stats);
        if ((long)stats.records_in >= produced)
            return stats;
    }
    fail_msg("only %llu of %ld records consumed", (unsigned long long)stats.records_in, produced);
    return stats;
}

static void keyed_source_dead_letters_records_on_a_wrong_partition(void **state) {
    (void)state;
    fixture f = {0};
    assert_int_equal(setup(&f, true), 0);
    long produced = produce_everywhere(&f);
    sl_engine_stats stats = run_until_consumed(&f, produced);
    assert_int_equal(f.processed, N_KEYS);
    assert_int_equal(f.processed_elsewhere, 0);
    assert_int_equal(stats.records_wrong_partition, produced - N_KEYS);
    assert_int_equal(stats.records_dlq, produced - N_KEYS);
    teardown(&f);
}

static void source_not_keyed_processes_records_wherever_they_land(void **state) {
    (void)state;
    fixture f = {0};
    assert_int_equal(setup(&f, false), 0);
    long produced = produce_everywhere(&f);
    sl_engine_stats stats = run_until_consumed(&f, produced);
    assert_int_equal(f.processed, produced);
    assert_int_equal(stats.records_wrong_partition, 0);
    assert_int_equal(stats.records_dlq, 0);
    teardown(&f);
}

static void set_keyed_refuses_an_unknown_source(void **state) {
    (void)state;
    sl_topology *topology = sl_topology_new();
    assert_non_null(topology);
    assert_int_equal(sl_topology_add_source(topology, "data", INPUT, NULL, NULL), SL_OK);
    assert_int_equal(sl_topology_set_keyed(topology, "data"), SL_OK);
    assert_int_equal(sl_topology_set_keyed(topology, "nope"), SL_ERR_INVALID);
    sl_topology_destroy(topology);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keyed_source_dead_letters_records_on_a_wrong_partition),
        cmocka_unit_test(source_not_keyed_processes_records_wherever_they_land),
        cmocka_unit_test(set_keyed_refuses_an_unknown_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
