/*
 * Unit tests: how the engine reacts to Kafka faults (RELIABILITY.md 5), on
 * librdkafka's in-process mock cluster with three brokers.
 *
 * Each test runs a small counting topology (source -> store "counts" ->
 * sink) in-process with sl_engine_poll, injects faults with the mock's
 * error stacks or takes a broker down, runs until every input record is
 * processed and committed, and checks the engine's reaction in
 * sl_engine_stats (and, where it means something, the local store):
 *
 *   retriable  librdkafka retries the request itself; the engine sees a
 *              normal commit: commits grow, no abort, no producer reset
 *   abortable  the engine aborts, drops the pending store writes and
 *              rewinds: aborts grow, no producer reset, the batch is
 *              processed again
 *   fatal      the engine recreates the producer and its tasks (wipe and
 *              restore) and rewinds: producer_resets grow; if the producer
 *              cannot be recreated the engine stops, and still closes
 *   broker     a partition leader goes down and comes back, or its
 *              partitions move to another broker: processing resumes
 *
 * How librdkafka 2.0.2 surfaces the errors injected here to the
 * transactional API (found by experiment; librdkafka decides the class, the
 * engine follows the error object's flags):
 *
 *   request             injected error                        surfaces as
 *   EndTxn              COORDINATOR_LOAD_IN_PROGRESS          retried inside
 *   TxnOffsetCommit     NOT_COORDINATOR                       retried inside
 *   InitProducerId      COORDINATOR_LOAD_IN_PROGRESS          retried inside
 *   Produce             TOPIC_AUTHORIZATION_FAILED            abortable
 *   TxnOffsetCommit     ILLEGAL_GENERATION                    abortable
 *   EndTxn              PRODUCER_FENCED                       fatal (_FENCED)
 *   AddPartitionsToTxn  INVALID_PRODUCER_EPOCH                fatal (_FENCED)
 *   InitProducerId      TRANSACTIONAL_ID_AUTHORIZATION_FAILED fatal
 *
 * What the mock does not do, and what follows: it keeps aborted records
 * visible, so nothing here claims exactly-once output; and it accepts
 * TxnOffsetCommit but stores no offset, so under exactly-once the group
 * never has a committed offset and every rewind goes back to the beginning
 * of the input. The store check is therefore made only where that rewind
 * is also the right one: after no rewind at all, or after an abort in the
 * very first transaction. There it shows what matters: the engine applies
 * store writes to RocksDB only after a commit succeeded, so every key's
 * count equals the number of input records with that key, and an aborted
 * batch's writes never counted twice.
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
#include "state/store.h"
#include "tests/support/testutil.h"

#define APP_ID      "faults"
#define INSTANCE_ID "0123456789abcdef0123456789abcdef"
#define TXN_ID      APP_ID "-" INSTANCE_ID
#define INPUT       "faults.input"
#define OUTPUT      "faults.counts"
#define STORE       "counts"
#define PARTITIONS  2
#define N_KEYS      8
#define BATCH       200

/* Broker roles, fixed so a test can take one down without losing the
 * others: the group and transaction coordinators live on COORDINATOR, every
 * partition leader on LEADER; FOLLOWER takes over in the fail-over test. */
#define COORDINATOR 1
#define LEADER      2
#define FOLLOWER    3

/* Kafka protocol ApiKeys (rdkafka_mock.h takes them as plain integers). */
#define API_PRODUCE               0
#define API_INIT_PRODUCER_ID      22
#define API_ADD_PARTITIONS_TO_TXN 24
#define API_END_TXN               26
#define API_TXN_OFFSET_COMMIT     28

#define DEADLINE_MS 20000

typedef struct fixture {
    char dir[64];
    sl_embedded_cluster *cluster;
    rd_kafka_mock_cluster_t *mock;
    const char *bootstrap;
    sl_config *config;
    sl_topology *topology;
    sl_engine *engine;
    bool closed;
    rd_kafka_t *driver; /* produces the input */
    long produced;
    long per_key[N_KEYS];
    int64_t partition_end[PARTITIONS]; /* input records per partition */
    /* Seen by the processor: the offset after the record it processed last
     * in each partition (it goes back after a rewind), and the engine's
     * commit count at that moment. */
    int64_t processed_next[PARTITIONS];
    uint64_t commits_at_last_record;
    uint64_t rewinds_seen; /* aborts + producer resets when last seen */
    long records_seen;
    /* Stall the processor this long before the second record, so that the
     * answer to the first record's requests arrives in between. */
    int stall_ms;
} fixture;

/* ---- the topology: count records per key ------------------------------ */

static sl_err count(sl_ctx *ctx, const sl_record *record, void *opaque) {
    fixture *f = opaque;
    sl_engine_stats stats;
    sl_engine_stats_get(f->engine, &stats);
    if (stats.aborts + stats.producer_resets != f->rewinds_seen) {
        /* A rewind: every partition is processed again from the start. */
        f->rewinds_seen = stats.aborts + stats.producer_resets;
        memset(f->processed_next, 0, sizeof(f->processed_next));
    }
    f->processed_next[record->partition] = record->offset + 1;
    f->commits_at_last_record = stats.commits;
    if (++f->records_seen == 2 && f->stall_ms > 0)
        usleep((useconds_t)f->stall_ms * 1000);
    long n = 0;
    char *old = NULL;
    size_t old_len = 0;
    sl_err err = sl_ctx_get(ctx, STORE, record->key, record->key_len, &old, &old_len);
    if (err == SL_OK) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.*s", (int)old_len, old);
        free(old);
        n = strtol(buf, NULL, 10);
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    char value[32];
    int len = snprintf(value, sizeof(value), "%ld", n + 1);
    err = sl_ctx_put(ctx, STORE, record->key, record->key_len, value, (size_t)len);
    if (err)
        return err;
    return sl_ctx_emit(ctx, "counts", record->key, record->key_len, value, (size_t)len, -1);
}

/* Never fires (an hour). It is there because with a punctuator the engine
 * looks at the record's task again after processing it, and a producer
 * reset during processing replaces every task. */
static sl_err never(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    (void)ctx;
    (void)now_ms;
    (void)opaque;
    return SL_OK;
}

/* ---- fixture ----------------------------------------------------------- */

static void place_partitions(fixture *f, const char *topic, int broker) {
    for (int p = 0; p < PARTITIONS; p++)
        assert_int_equal(rd_kafka_mock_partition_set_leader(f->mock, topic, p, broker), 0);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    char errstr[512], path[128];
    if (!f)
        return -1;
    *state = f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-faults-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    /* The caller of sl_engine_new owns the state directory (sl_app locks
     * it); a fixed instance id makes the transactional id known. */
    snprintf(path, sizeof(path), "%s/%s", f->dir, APP_ID);
    if (mkdir(path, 0755) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/%s/instance.id", f->dir, APP_ID);
    FILE *file = fopen(path, "w");
    if (!file || fprintf(file, "%s\n", INSTANCE_ID) < 0 || fclose(file) != 0)
        return -1;

    f->cluster = sl_embedded_cluster_new(3, &test_logger, errstr, sizeof(errstr));
    if (!f->cluster)
        return -1;
    f->mock = sl_embedded_cluster_mock(f->cluster);
    f->bootstrap = sl_embedded_cluster_bootstraps(f->cluster);
    bool created;
    const char *topics[] = {INPUT, OUTPUT, APP_ID "-" STORE "-changelog", APP_ID "-dlq"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        if (sl_embedded_cluster_create_topic(f->cluster, topics[i], PARTITIONS, &created, errstr,
                                             sizeof(errstr)))
            return -1;
        place_partitions(f, topics[i], LEADER);
    }
    /* The engine's group for the source "data" (one group per source), and
     * application.id, whose offsets an upgrade copies. */
    rd_kafka_mock_coordinator_set(f->mock, "group", APP_ID "-data", COORDINATOR);
    rd_kafka_mock_coordinator_set(f->mock, "group", APP_ID, COORDINATOR);
    rd_kafka_mock_coordinator_set(f->mock, "transaction", TXN_ID, COORDINATOR);

    f->config = sl_config_new(sl_config_groups, NULL, 0);
    if (!f->config || sl_config_set(f->config, "application.id", APP_ID, errstr, sizeof(errstr)) ||
        sl_config_set(f->config, "state.dir", f->dir, errstr, sizeof(errstr)) ||
        sl_config_set(f->config, "commit.interval.ms", "50", errstr, sizeof(errstr)) ||
        /* Reconnect to a broker that came back within a second. */
        sl_config_set(f->config, "kafka.reconnect.backoff.max.ms", "500", errstr, sizeof(errstr)))
        return -1;
    f->topology = sl_topology_new();
    if (!f->topology || sl_topology_add_source(f->topology, "data", INPUT, NULL, NULL) ||
        sl_topology_add_store(f->topology, STORE, "data") ||
        sl_topology_add_processor(f->topology, "count", "data", count, f) ||
        sl_topology_add_sink(f->topology, "counts", OUTPUT) ||
        sl_topology_add_punctuator(f->topology, "never", SL_PUNCTUATE_WALL_CLOCK, 3600 * 1000,
                                   never, NULL))
        return -1;
    f->engine =
        sl_engine_new(f->config, f->topology, f->bootstrap, &test_logger, errstr, sizeof(errstr));
    if (!f->engine) {
        fprintf(stderr, "# engine: %s\n", errstr);
        return -1;
    }
    sl_engine_use_embedded_cluster(f->engine, f->cluster);
    if (sl_engine_start(f->engine, errstr, sizeof(errstr))) {
        fprintf(stderr, "# engine start: %s\n", errstr);
        return -1;
    }

    /* A plain producer: the idempotent one's producer id costs a second
     * per test on the mock, and nothing fails while the input is written. */
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_PRODUCER, f->bootstrap, NULL, &test_logger,
                                              errstr, sizeof(errstr));
    if (!conf || sl_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof(errstr))) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return -1;
    }
    f->driver = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!f->driver) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (!f)
        return 0;
    if (f->engine) {
        if (!f->closed)
            sl_engine_close(f->engine);
        sl_engine_destroy(f->engine);
    }
    if (f->driver)
        rd_kafka_destroy(f->driver);
    sl_topology_destroy(f->topology);
    sl_config_destroy(f->config);
    sl_embedded_cluster_destroy(f->cluster);
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "# could not remove %s\n", f->dir);
    }
    free(f);
    return 0;
}

/* ---- driving and observing the engine ---------------------------------- */

/* Produce `n` records, keys k0..k7 round robin, and wait for them. */
static void produce_input(fixture *f, int n) {
    for (int i = 0; i < n; i++) {
        int k = (int)(f->produced % N_KEYS);
        char key[16], value[32];
        int key_len = snprintf(key, sizeof(key), "k%d", k);
        int value_len = snprintf(value, sizeof(value), "%ld", f->produced);
        assert_int_equal(rd_kafka_producev(f->driver, RD_KAFKA_V_TOPIC(INPUT),
                                           RD_KAFKA_V_KEY(key, (size_t)key_len),
                                           RD_KAFKA_V_VALUE(value, (size_t)value_len),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        f->per_key[k]++;
        f->produced++;
        /* The driver partitions like every sluice client and writes to an
         * empty topic without failures: offsets count the records. */
        f->partition_end[rd_kafka_msg_partitioner_murmur2_random(NULL, key, (size_t)key_len,
                                                                 PARTITIONS, NULL, NULL)]++;
    }
    assert_int_equal(rd_kafka_flush(f->driver, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static sl_engine_stats stats_of(const fixture *f) {
    sl_engine_stats stats;
    sl_engine_stats_get(f->engine, &stats);
    return stats;
}

/* True once the engine processed every input record and committed after
 * the last one. (Not the group's committed offsets: the mock cluster
 * accepts TxnOffsetCommit but stores nothing, so under exactly-once the
 * group never has a committed offset there, and a rewind goes back to the
 * beginning of the input.) */
static bool input_committed(fixture *f) {
    for (int p = 0; p < PARTITIONS; p++)
        if (f->processed_next[p] < f->partition_end[p])
            return false;
    return stats_of(f).commits > f->commits_at_last_record;
}

/* Run the engine loop until every input record is committed; false if the
 * deadline passes first. An error from sl_engine_poll fails the test. */
static bool run_until_committed(fixture *f, int timeout_ms) {
    for (int64_t deadline = test_now_ms() + timeout_ms; test_now_ms() < deadline;) {
        sl_err err = sl_engine_poll(f->engine, 20);
        if (err)
            fail_msg("sl_engine_poll: %s", sl_err_name(err));
        if (input_committed(f))
            return true;
    }
    return false;
}

/* Close the engine (clean close: the stores are checkpointed and released)
 * and check that every key's count in the local stores equals the number
 * of input records with that key. */
static void assert_store_matches_input(fixture *f) {
    assert_int_equal(sl_engine_close(f->engine), SL_OK);
    f->closed = true;
    char errstr[512], path[256];
    sl_store_env *env = sl_store_env_new(1 << 20, 1 << 20, errstr, sizeof(errstr));
    assert_non_null(env);
    sl_store *stores[PARTITIONS];
    for (int p = 0; p < PARTITIONS; p++) {
        snprintf(path, sizeof(path), "%s/%s/data_%d/%s", f->dir, APP_ID, p, STORE);
        stores[p] = sl_store_open(env, path, errstr, sizeof(errstr));
        if (!stores[p])
            fail_msg("open %s: %s", path, errstr);
    }
    for (int k = 0; k < N_KEYS; k++) {
        char key[16];
        int key_len = snprintf(key, sizeof(key), "k%d", k);
        long count_found = 0;
        int found_in = 0;
        for (int p = 0; p < PARTITIONS; p++) {
            char *value = NULL;
            size_t value_len = 0;
            if (sl_store_get(stores[p], key, (size_t)key_len, &value, &value_len, errstr,
                             sizeof(errstr)) != SL_OK)
                continue;
            char buf[32];
            snprintf(buf, sizeof(buf), "%.*s", (int)value_len, value);
            free(value);
            count_found = strtol(buf, NULL, 10);
            found_in++;
        }
        assert_int_equal(found_in, 1);
        assert_int_equal(count_found, f->per_key[k]);
    }
    for (int p = 0; p < PARTITIONS; p++)
        sl_store_close(stores[p]);
    sl_store_env_destroy(env);
}

/* The first batch: the group is joined, the tasks run, one commit went
 * through. Returns the stats at that point. */
static sl_engine_stats warm_up(fixture *f) {
    produce_input(f, BATCH);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_true(stats.commits > 0);
    assert_int_equal(stats.aborts, 0);
    assert_int_equal(stats.producer_resets, 0);
    return stats;
}

/* Push `count` copies of `code` onto `broker`'s error stack for `api`. */
static void push_broker_errors(fixture *f, int broker, int api, int count,
                               rd_kafka_resp_err_t code) {
    for (int i = 0; i < count; i++)
        assert_int_equal(
            rd_kafka_mock_broker_push_request_error_rtts(f->mock, broker, (int16_t)api, 1, code, 0),
            RD_KAFKA_RESP_ERR_NO_ERROR);
}

static size_t broker_errors_left(fixture *f, int broker, int api) {
    size_t left = 0;
    assert_int_equal(rd_kafka_mock_broker_error_stack_cnt(f->mock, broker, (int16_t)api, &left),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    return left;
}

/* Poll until sl_engine_poll returns an error (or the deadline passes). */
static sl_err poll_until_error(fixture *f, int timeout_ms) {
    sl_err err = SL_OK;
    for (int64_t deadline = test_now_ms() + timeout_ms; !err && test_now_ms() < deadline;)
        err = sl_engine_poll(f->engine, 20);
    return err;
}

/* ---- retriable ----------------------------------------------------------
 * Each fault hits the first transaction: the group's first join costs three
 * seconds on the mock, and a second phase would show nothing more. */

static void
retriable_end_txn_and_txn_offset_commit_errors_are_retried_and_the_commit_succeeds(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_TXN_OFFSET_COMMIT, 2, RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 2,
                       RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_TXN_OFFSET_COMMIT), 0);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_END_TXN), 0);
    assert_true(stats.commits >= 1);
    assert_int_equal(stats.aborts, 0);
    assert_int_equal(stats.producer_resets, 0);
    assert_int_equal(stats.records_in, f->produced);
    assert_store_matches_input(f);
}

/* ---- abortable ----------------------------------------------------------
 * The fault hits the first transaction: with no committed offsets yet, the
 * rewind goes back to the beginning on the mock as on a real cluster, so
 * the final counts show whether the aborted batch's writes were dropped. A
 * second batch then shows that processing goes on without further aborts. */

static void abortable_produce_error_aborts_and_the_batch_is_processed_again(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, LEADER, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, LEADER, API_PRODUCE), 0);
    /* One abort for the failed Produce; librdkafka 2.0.2 may need another
     * (OUT_OF_ORDER_SEQUENCE_NUMBER, "requires epoch bump") on the mock. */
    assert_true(stats.aborts >= 1);
    assert_int_equal(stats.producer_resets, 0);
    assert_true(stats.records_in > (uint64_t)f->produced);
    produce_input(f, BATCH);
    assert_true(run_until_committed(f, DEADLINE_MS));
    assert_int_equal(stats_of(f).aborts, stats.aborts);
    assert_store_matches_input(f);
}

static void
abortable_txn_offset_commit_error_aborts_and_the_batch_is_processed_again(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_TXN_OFFSET_COMMIT, 1,
                       RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_TXN_OFFSET_COMMIT), 0);
    assert_int_equal(stats.aborts, 1);
    assert_int_equal(stats.producer_resets, 0);
    assert_true(stats.records_in > (uint64_t)f->produced);
    produce_input(f, BATCH);
    assert_true(run_until_committed(f, DEADLINE_MS));
    assert_int_equal(stats_of(f).aborts, 1);
    assert_store_matches_input(f);
}

/* ---- fatal --------------------------------------------------------------
 * After a reset the engine wipes its stores, restores them from the
 * changelogs and rewinds; the mock keeps failed transactions' changelog
 * records visible and commits no offsets, so the counts after a reset say
 * nothing. What is checked: the new producer commits every record again. */

static void fenced_end_txn_recreates_the_producer_and_processing_continues(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_END_TXN), 0);
    assert_int_equal(stats.producer_resets, 1);
    assert_int_equal(stats.aborts, 0);
    assert_true(stats.commits >= 1);
    assert_true(stats.restored_records > 0);
}

/* The fenced AddPartitionsToTxn answer arrives while records are still
 * being processed, so the next produce call fails with a fatal error: the
 * producer is recreated at once; there is nothing to abort. */
static void fenced_add_partitions_to_txn_recreates_the_producer_without_an_abort(void **state) {
    fixture *f = *state;
    f->stall_ms = 300;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_ADD_PARTITIONS_TO_TXN, 1,
                       RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_ADD_PARTITIONS_TO_TXN), 0);
    assert_int_equal(stats.producer_resets, 1);
    assert_int_equal(stats.aborts, 0);
    assert_true(stats.commits >= 1);
}

/* An abortable error whose abort is fenced: the abort's error is fatal, so
 * the engine recreates the producer after all. */
static void fenced_abort_recreates_the_producer_and_processing_continues(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_TXN_OFFSET_COMMIT, 1,
                       RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_END_TXN), 0);
    assert_int_equal(stats.aborts, 1);
    assert_int_equal(stats.producer_resets, 1);
    assert_true(stats.commits >= 1);
}

/* The new producer's InitProducerId meets a loading coordinator: retried. */
static void retriable_init_producer_id_error_does_not_stop_the_producer_reset(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    push_broker_errors(f, COORDINATOR, API_INIT_PRODUCER_ID, 2,
                       RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(broker_errors_left(f, COORDINATOR, API_INIT_PRODUCER_ID), 0);
    assert_int_equal(stats.producer_resets, 1);
    assert_true(stats.commits >= 1);
}

/* A producer that cannot be recreated is the one error the engine cannot
 * recover from: sl_engine_poll says so, keeps saying so, and the engine
 * still closes (without a producer, and without checkpointing tasks whose
 * state it no longer trusts). */
static void failed_producer_reset_after_a_fenced_commit_stops_the_engine_cleanly(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    push_broker_errors(f, COORDINATOR, API_INIT_PRODUCER_ID, 1,
                       RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert_int_equal(poll_until_error(f, DEADLINE_MS), SL_ERR_KAFKA_FATAL);
    assert_int_equal(stats_of(f).producer_resets, 1);
    assert_int_equal(sl_engine_poll(f->engine, 20), SL_ERR_KAFKA_FATAL);
    assert_int_equal(sl_engine_close(f->engine), SL_OK);
    f->closed = true;
    assert_int_equal(stats_of(f).tasks_assigned, 0);
}

static void failed_producer_reset_after_a_fenced_abort_stops_the_engine_cleanly(void **state) {
    fixture *f = *state;
    produce_input(f, BATCH);
    push_broker_errors(f, COORDINATOR, API_TXN_OFFSET_COMMIT, 1,
                       RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    push_broker_errors(f, COORDINATOR, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    push_broker_errors(f, COORDINATOR, API_INIT_PRODUCER_ID, 1,
                       RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert_int_equal(poll_until_error(f, DEADLINE_MS), SL_ERR_KAFKA_FATAL);
    sl_engine_stats stats = stats_of(f);
    assert_int_equal(stats.aborts, 1);
    assert_int_equal(stats.producer_resets, 1);
    assert_int_equal(sl_engine_close(f->engine), SL_OK);
    f->closed = true;
}

/* ---- brokers ------------------------------------------------------------ */

/* Poll the engine for `ms` milliseconds. */
static void run_for(fixture *f, int ms) {
    for (int64_t until = test_now_ms() + ms; test_now_ms() < until;)
        assert_int_equal(sl_engine_poll(f->engine, 20), SL_OK);
}

static void partition_leader_down_and_up_processing_resumes(void **state) {
    fixture *f = *state;
    sl_engine_stats before = warm_up(f);
    produce_input(f, BATCH);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mock, LEADER), 0);
    run_for(f, 1500);
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mock, LEADER), 0);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats after = stats_of(f);
    assert_true(after.commits > before.commits);
    assert_int_equal(after.producer_resets, 0);
    assert_int_equal(after.aborts, 0);
    assert_store_matches_input(f);
}

static void partition_leaders_fail_over_to_another_broker_processing_resumes(void **state) {
    fixture *f = *state;
    sl_engine_stats before = warm_up(f);
    produce_input(f, BATCH);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mock, LEADER), 0);
    run_for(f, 500);
    const char *topics[] = {INPUT, OUTPUT, APP_ID "-" STORE "-changelog", APP_ID "-dlq"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        place_partitions(f, topics[i], FOLLOWER);
    assert_true(run_until_committed(f, DEADLINE_MS));
    sl_engine_stats after = stats_of(f);
    assert_true(after.commits > before.commits);
    assert_int_equal(after.producer_resets, 0);
    assert_int_equal(after.aborts, 0);
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mock, LEADER), 0);
    assert_store_matches_input(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        TEST(retriable_end_txn_and_txn_offset_commit_errors_are_retried_and_the_commit_succeeds),
        TEST(abortable_produce_error_aborts_and_the_batch_is_processed_again),
        TEST(abortable_txn_offset_commit_error_aborts_and_the_batch_is_processed_again),
        TEST(fenced_end_txn_recreates_the_producer_and_processing_continues),
        TEST(fenced_add_partitions_to_txn_recreates_the_producer_without_an_abort),
        TEST(retriable_init_producer_id_error_does_not_stop_the_producer_reset),
        TEST(fenced_abort_recreates_the_producer_and_processing_continues),
        TEST(failed_producer_reset_after_a_fenced_commit_stops_the_engine_cleanly),
        TEST(failed_producer_reset_after_a_fenced_abort_stops_the_engine_cleanly),
        TEST(partition_leader_down_and_up_processing_resumes),
        TEST(partition_leaders_fail_over_to_another_broker_processing_resumes),
#undef TEST
    };
    return cmocka_run_group_tests_name("engine_faults", tests, NULL, NULL);
}
