/*
 * Engine system tests against the real broker, modelled on Kafka Streams'
 * EOS system test: the counter application (tests/apps/counter.c) runs as
 * separate processes that the test kills with SIGKILL and restarts, while a
 * driver produces keyed, sequence-numbered records; a read_committed
 * verifier then checks every output.
 *
 * SLUICE_TEST_EOS_RECORDS sets the input size of the kill test (default
 * 200000).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/eos.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

static char errstr[1024];

static void run_kill_loop(test_instance *victim, test_instance *other, int kills,
                          pthread_t *producer_thread) {
    unsigned seed = (unsigned)getpid();
    for (int i = 0; i < kills; i++) {
        usleep((useconds_t)(500 + rand_r(&seed) % 2500) * 1000);
        test_instance *inst = (i % 2 == 0 || !other) ? victim : other;
        test_instance_kill9(inst);
        usleep((useconds_t)(rand_r(&seed) % 1000) * 1000);
        test_instance_start(inst);
    }
    pthread_join(*producer_thread, NULL);
}

static long eos_records(void) {
    const char *env = getenv("SLUICE_TEST_EOS_RECORDS");
    long n = env ? strtol(env, NULL, 10) : 0;
    return n > 0 ? n : 200000;
}

static void eos_counting_is_exact_across_kill9(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "eos-kill", 40);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_start_both(&a, &b, 60000);
    long n = eos_records();
    eos_driver d = {.sc = &sc, .from = 0, .to = n, .pace_per_ms = (int)(n / 15000 + 1)};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    run_kill_loop(&a, &b, 5, &producer_thread);
    bool consumed = eos_wait_consumed(&sc, 300000);
    int status_a = test_instance_stop(&a, 60000), status_b = test_instance_stop(&b, 60000);
    if (!consumed || status_a != 0 || status_b != 0) { /* with gdb's stacks of a hang */
        test_instance_dump_log(&a, 150);
        test_instance_dump_log(&b, 150);
    }
    assert_true(consumed);
    assert_int_equal(status_a, 0);
    assert_int_equal(status_b, 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

/* With a commit interval far beyond the test's deadline, only the record
 * cache's bound (store.pending.max.bytes at its minimum, 1 KiB: a dozen
 * keys' pending entries) can make the engine commit while it processes;
 * the clean stop commits the rest, and the counts are exact. */
static void full_record_cache_commits_early_and_counts_stay_exact(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "eos-cache-full", EOS_MAX_KEYS);
    enum { RECORDS = 4000 };
    eos_driver d = {.sc = &sc, .from = 0, .to = RECORDS};
    eos_drive(&d);
    test_instance a;
    const char *const small_cache[] = {"--set", "store.pending.max.bytes=1024", "--set",
                                       "commit.interval.ms=600000", NULL};
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", small_cache);
    test_instance_start(&a);
    long long processed = 0;
    for (int64_t deadline = test_now_ms() + 180000; test_now_ms() < deadline && processed < RECORDS;
         usleep(200 * 1000))
        processed = test_instance_engine_stat(&a, "records_in");
    if (processed < RECORDS)
        test_instance_dump_log(&a, 40);
    assert_int_equal(processed, RECORDS);
    /* 16 keys per partition, a bound of about 9 entries: many commits. */
    long long commits = test_instance_engine_stat(&a, "commits");
    printf("# %lld commits while processing %d records\n", commits, RECORDS);
    assert_true(commits >= 10);
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
}

static void crash_inside_an_open_transaction_loses_and_duplicates_nothing(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "eos-txn-crash", 8);
    eos_driver d = {.sc = &sc, .from = 0, .to = 20000};
    eos_drive(&d);
    /* The first incarnation kills itself after 7777 records, in the middle of
     * a transaction; the second finishes the job from the committed state. */
    test_instance a;
    const char *const crash[] = {"--crash-after", "7777", NULL};
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", crash);
    test_instance_start(&a);
    int status = 0;
    for (int64_t deadline = test_now_ms() + 120000; test_now_ms() < deadline;) {
        if (waitpid(a.pid, &status, WNOHANG) == a.pid)
            break;
        usleep(100 * 1000);
    }
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    a.pid = 0;
    test_instance_free(&a);
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2",
                      NULL); /* same state dir, no hook */
    test_instance_start(&a);
    bool consumed = eos_wait_consumed(&sc, 120000);
    if (!consumed)
        test_instance_dump_log(&a, 40);
    assert_true(consumed);
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
}

static void at_least_once_loses_nothing_and_reports_duplicates(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "alos-kill", 40);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "at_least_once", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "at_least_once", NULL);
    test_instance_start_both(&a, &b, 60000);
    long n = eos_records() / 4;
    eos_driver d = {.sc = &sc, .from = 0, .to = n, .pace_per_ms = (int)(n / 8000 + 1)};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    run_kill_loop(&a, &b, 3, &producer_thread);
    bool consumed = eos_wait_consumed(&sc, 300000);
    int status_a = test_instance_stop(&a, 60000), status_b = test_instance_stop(&b, 60000);
    if (!consumed || status_a != 0 || status_b != 0) { /* with gdb's stacks of a hang */
        test_instance_dump_log(&a, 150);
        test_instance_dump_log(&b, 150);
    }
    assert_true(consumed);
    assert_int_equal(status_a, 0);
    assert_int_equal(status_b, 0);

    eos_verify *v = calloc(1, sizeof(*v));
    for (int k = 0; k < sc.n_keys; k++) {
        v->capacity[k] = sc.per_key[k];
        v->seen_counts[k] = calloc((size_t)sc.per_key[k] + 1, sizeof(int64_t));
    }
    long echoed = test_scan_topic(test_kafka_bootstrap(), sc.echo, "read_committed", eos_check_echo,
                                  v, 120000);
    long missing = 0, duplicated = 0;
    for (int k = 0; k < sc.n_keys; k++) {
        for (int64_t s = 0; s < sc.per_key[k]; s++) {
            missing += v->seen_counts[k][s] == 0;
            duplicated += v->seen_counts[k][s] > 1 ? v->seen_counts[k][s] - 1 : 0;
        }
        free(v->seen_counts[k]);
    }
    printf("# at_least_once verifier: %ld input, %ld echoed, %ld missing, %ld duplicates "
           "(duplicates are allowed under at-least-once; losses are not)\n",
           sc.n_records, echoed, missing, duplicated);
    assert_int_equal(missing, 0);
    free(v);
    test_instance_free(&a);
    test_instance_free(&b);
}

/* Start `inst`, wait until it is ready and return how many changelog records
 * it restored. */
static long long start_and_count_restored(test_instance *inst) {
    test_instance_start_ready(inst, 120000, "instance");
    return test_instance_engine_stat(inst, "restored_records");
}

static void restore_rebuilds_the_store_and_a_clean_restart_restores_only_the_tail(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "restore", 16);
    eos_driver d = {.sc = &sc, .from = 0, .to = 20000};
    eos_drive(&d);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_start(&a);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&a, 60000), 0);

    /* Clean restart: the checkpoint is at the changelog's end. */
    long long restored = start_and_count_restored(&a);
    printf("# clean restart restored %lld records\n", restored);
    assert_int_equal(restored, 0);
    assert_int_equal(test_instance_stop(&a, 60000), 0);

    /* B, with an empty state dir, restores everything, then adds 5000
     * records (one changelog record each) while A is away. */
    restored = start_and_count_restored(&b);
    printf("# a new instance restored %lld records\n", restored);
    assert_int_equal(restored, 20000);
    d.from = 20000;
    d.to = 25000;
    eos_drive(&d);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&b, 60000), 0);

    /* A comes back: only the tail after its checkpoint. */
    restored = start_and_count_restored(&a);
    printf("# clean restart after 5000 more records restored %lld records\n", restored);
    assert_int_equal(restored, 5000);
    assert_int_equal(test_instance_stop(&a, 60000), 0);

    /* Lost state dir: everything comes back from the changelog. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", a.state_dir);
    assert_int_equal(system(cmd), 0);
    restored = start_and_count_restored(&a);
    printf("# after deleting the state dir: restored %lld records\n", restored);
    assert_int_equal(restored, 25000);
    /* The same numbers reach Prometheus. */
    static char metrics[1 << 16];
    assert_int_equal(test_http(a.admin_port, "GET", "/metrics", NULL, NULL, 0, NULL, 0, metrics,
                               sizeof(metrics)),
                     200);
    char expected[64];
    snprintf(expected, sizeof(expected), "sluice_restore_records_total %lld\n", restored);
    assert_non_null(strstr(metrics, expected));
    assert_non_null(strstr(metrics, "sluice_tasks_running 4\n"));
    assert_non_null(strstr(metrics, "sluice_store_estimated_keys{store=\"agg\",partition=\"0\"}"));
    assert_non_null(strstr(metrics, "sluice_commit_seconds_bucket{le=\"+Inf\"}"));
    /* The restored store equals the old one: aggregates computed on top of
     * it for new input are still exact. */
    d.from = 25000;
    d.to = 30000;
    eos_drive(&d);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

static void poison_record_goes_to_the_dlq_and_the_stream_continues(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "poison", 4);
    eos_driver d = {.sc = &sc, .from = 0, .to = 2000, .poison_value = "\xff\xfe not a number"};
    eos_drive(&d);
    /* and one the processor rejects itself, named by a header */
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    rd_kafka_headers_t *reject = rd_kafka_headers_new(1);
    rd_kafka_header_add(reject, "reject", -1, "by request", -1);
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(sc.input),
                                       RD_KAFKA_V_KEY("k1", 2), RD_KAFKA_V_VALUE("5", 1),
                                       RD_KAFKA_V_HEADERS(reject),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);
    test_instance a;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    test_instance_start(&a);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc); /* the records after the poison were processed */

    test_record records[8];
    int n = test_read_topic(test_kafka_bootstrap(), sc.dlq, "read_committed", records, 8, 60000);
    assert_int_equal(n, 2);
    if (strcmp(records[0].key, "k0") != 0) { /* the two may sit on either partition order */
        test_record swap = records[0];
        records[0] = records[1];
        records[1] = swap;
    }
    assert_string_equal(records[0].key, "k0");
    assert_string_equal(records[1].key, "k1");
    /* Headers: read them with a raw consumer for the reason. */
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, test_kafka_bootstrap(), NULL,
                                              &test_logger, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", sc.app_id, errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, sc.dlq, records[0].partition)->offset =
        records[0].offset;
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_message_t *m = NULL;
    for (int64_t deadline = test_now_ms() + 30000; !m && test_now_ms() < deadline;) {
        m = rd_kafka_consumer_poll(rk, 500);
        if (m && m->err) {
            rd_kafka_message_destroy(m);
            m = NULL;
        }
    }
    assert_non_null(m);
    rd_kafka_headers_t *headers = NULL;
    assert_int_equal(rd_kafka_message_headers(m, &headers), 0);
    const void *value;
    size_t size;
    assert_int_equal(rd_kafka_header_get_last(headers, "sluice.dlq.topic", &value, &size), 0);
    assert_memory_equal(value, sc.input, strlen(sc.input));
    assert_int_equal(rd_kafka_header_get_last(headers, "sluice.dlq.error", &value, &size), 0);
    printf("# dlq reason: %.*s\n", (int)size, (const char *)value);
    assert_int_equal(rd_kafka_header_get_last(headers, "sluice.dlq.offset", &value, &size), 0);
    assert_int_equal(rd_kafka_header_get_last(headers, "sluice.dlq.processor", &value, &size), 0);
    rd_kafka_message_destroy(m);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    test_instance_free(&a);
}

static void instances_join_and_leave_while_records_flow(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "rebalance", 24);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_start(&a);
    assert_true(test_instance_wait_ready(&a, 60000));
    eos_driver d = {.sc = &sc, .from = 0, .to = 30000, .pace_per_ms = 3};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    usleep(2000 * 1000);
    test_instance_start(&b); /* joins: partitions move to it */
    assert_true(test_instance_wait_ready(&b, 60000));
    usleep(2000 * 1000);
    assert_int_equal(test_instance_stop(&b, 60000), 0); /* leaves cleanly */
    usleep(1000 * 1000);
    test_instance_start(&b); /* and joins again */
    pthread_join(producer_thread, NULL);
    assert_true(eos_wait_consumed(&sc, 180000));
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    assert_int_equal(test_instance_stop(&b, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

static void produce_one(const char *topic, int32_t partition, const char *key, const char *value,
                        int64_t timestamp_ms) {
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
                                       RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);
}

typedef struct global_answers {
    char per_partition[EOS_PARTITIONS][64];
} global_answers;

static void collect_global_answers(const rd_kafka_message_t *m, void *opaque) {
    global_answers *answers = opaque;
    if (m->key_len > 2 && memcmp(m->key, "g:", 2) == 0 && m->partition < EOS_PARTITIONS)
        snprintf(answers->per_partition[m->partition], sizeof(answers->per_partition[0]), "%.*s",
                 (int)m->len, (const char *)m->payload);
}

/* Ask every partition (so every instance) for "color"; true once each
 * partition's latest answer is `expected`. */
static bool every_partition_answers(const eos_scenario *sc, const char *expected) {
    for (int p = 0; p < EOS_PARTITIONS; p++)
        produce_one(sc->input, p, "g:color", "0", 0);
    if (!eos_wait_consumed(sc, 60000))
        return false;
    global_answers answers;
    memset(&answers, 0, sizeof(answers));
    test_scan_topic(test_kafka_bootstrap(), sc->agg, "read_committed", collect_global_answers,
                    &answers, 60000);
    bool all = true;
    for (int p = 0; p < EOS_PARTITIONS; p++) {
        printf("# partition %d answers %s\n", p, answers.per_partition[p]);
        all &= strcmp(answers.per_partition[p], expected) == 0;
    }
    return all;
}

static void global_store_is_seen_by_every_instance(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "global", 4);
    char global_topic[160];
    snprintf(global_topic, sizeof(global_topic), "%s.settings", sc.app_id);
    const char *const compact[] = {"cleanup.policy", "compact", NULL};
    sl_topic_spec spec = {
        .name = global_topic, .partitions = 2, .replication_factor = 1, .configs = compact};
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 30000, errstr, sizeof(errstr)),
                     SL_OK);
    produce_one(global_topic, -1, "color", "blue", 0);

    const char *const with_global[] = {"--global", global_topic, NULL};
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", with_global);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", with_global);
    test_instance_start_both(&a, &b, 60000);
    /* Both instances own partitions, so both answer. */
    for (int64_t deadline = test_now_ms() + 60000;
         (test_instance_engine_stat(&a, "tasks_running") < 1 ||
          test_instance_engine_stat(&b, "tasks_running") < 1) &&
         test_now_ms() < deadline;)
        usleep(200 * 1000);
    assert_true(test_instance_engine_stat(&a, "tasks_running") >= 1);
    assert_true(test_instance_engine_stat(&b, "tasks_running") >= 1);
    assert_true(every_partition_answers(&sc, "global:blue"));
    /* Kept current while running. */
    produce_one(global_topic, -1, "color", "green", 0);
    bool green = false;
    for (int64_t deadline = test_now_ms() + 60000; !green && test_now_ms() < deadline;)
        green = every_partition_answers(&sc, "global:green");
    assert_true(green);
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    assert_int_equal(test_instance_stop(&b, 60000), 0);
    test_instance_free(&a);
    test_instance_free(&b);
}

typedef struct ticks {
    int wall[EOS_PARTITIONS];
    int stream[EOS_PARTITIONS];
    long long last_stream[EOS_PARTITIONS];
    int stream_out_of_order;
} ticks;

static void count_ticks(const rd_kafka_message_t *m, void *opaque) {
    ticks *t = opaque;
    char value[64];
    snprintf(value, sizeof(value), "%.*s", (int)m->len, (const char *)m->payload);
    int partition = -1;
    long long when = 0;
    if (sscanf(value, "%d:%lld", &partition, &when) != 2 || partition != m->partition ||
        partition < 0 || partition >= EOS_PARTITIONS)
        return;
    if (m->key_len == 4 && memcmp(m->key, "tick", 4) == 0) {
        t->wall[partition]++;
    } else if (m->key_len == 11 && memcmp(m->key, "stream-tick", 11) == 0) {
        t->stream_out_of_order += when <= t->last_stream[partition];
        t->last_stream[partition] = when;
        t->stream[partition]++;
    }
}

static void punctuators_fire_on_wall_clock_and_stream_time(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "punctuate", 4);
    const char *const timers[] = {"--tick-ms", "500", "--stream-tick-ms", "1000", NULL};
    test_instance a;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", timers);
    test_instance_start(&a);
    assert_true(test_instance_wait_ready(&a, 60000));
    /* Stream time: ten seconds of event time on partition 0 only, one record
     * every 100 ms, starting at a whole second. */
    int64_t base = 1700000000000;
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    for (int i = 0; i <= 100; i++) {
        char value[16];
        int len = snprintf(value, sizeof(value), "%d", i);
        assert_int_equal(
            rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(sc.input), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_KEY("k0", 2), RD_KAFKA_V_VALUE(value, (size_t)len),
                              RD_KAFKA_V_TIMESTAMP(base + i * 100),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            0);
    }
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);
    assert_true(eos_wait_consumed(&sc, 60000));
    usleep(3000 * 1000); /* wall-clock ticks keep coming without input */
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    ticks t;
    memset(&t, 0, sizeof(t));
    test_scan_topic(test_kafka_bootstrap(), sc.echo, "read_committed", count_ticks, &t, 60000);
    for (int p = 0; p < EOS_PARTITIONS; p++)
        printf("# partition %d: %d wall-clock ticks, %d stream-time ticks\n", p, t.wall[p],
               t.stream[p]);
    /* Stream time crossed the whole seconds base+1s .. base+10s: one tick each. */
    assert_int_equal(t.stream[0], 10);
    assert_int_equal(t.stream_out_of_order, 0);
    for (int p = 1; p < EOS_PARTITIONS; p++)
        assert_int_equal(t.stream[p], 0); /* no input, no stream time */
    for (int p = 0; p < EOS_PARTITIONS; p++)
        assert_true(t.wall[p] >= 4); /* at least ~3 s at 500 ms, on every task */
    test_instance_free(&a);
}

/* A zombie: A freezes (SIGSTOP) past the session timeout while it may hold
 * an open transaction, B takes its partitions over, then A thaws. Whatever
 * A still tries to commit must fail (fenced, or aborted on partition loss),
 * A must rejoin, and the output must still be exact. */
static void zombie_instance_is_fenced_and_rejoins(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "zombie", 24);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_start_both(&a, &b, 60000);
    eos_driver d = {.sc = &sc, .from = 0, .to = 40000, .pace_per_ms = 2};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    usleep(3000 * 1000);
    kill(a.pid, SIGSTOP);
    usleep(10000 * 1000); /* > kafka.consumer.session.timeout.ms (6 s) */
    kill(a.pid, SIGCONT);
    pthread_join(producer_thread, NULL);
    bool consumed = eos_wait_consumed(&sc, 180000);
    bool rejoined =
        test_instance_wait_ready(&a, 60000) && test_instance_engine_stat(&a, "tasks_running") >= 1;
    int status_a = test_instance_stop(&a, 60000), status_b = test_instance_stop(&b, 60000);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "grep -E -c 'lost [0-9]+ partition|aborting the transaction|fatal producer error' "
             "'%s' >/dev/null",
             a.log_path);
    bool noticed = system(cmd) == 0;
    /* Regression: a rewind with nothing left assigned used to fail and be
     * retried on every loop iteration, flooding the log. */
    snprintf(cmd, sizeof(cmd), "! grep -q 'seek failed' '%s'", a.log_path);
    bool quiet = system(cmd) == 0;
    if (!consumed || !noticed || !rejoined)
        test_instance_dump_log(&a, 40);
    assert_true(consumed);
    assert_true(noticed);
    assert_true(quiet);
    assert_true(rejoined);
    assert_int_equal(status_a, 0);
    assert_int_equal(status_b, 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

typedef struct group_check {
    int64_t last[4];
    long not_consecutive;
} group_check;

static void check_groups(const rd_kafka_message_t *m, void *opaque) {
    group_check *g = opaque;
    if (m->key_len != 2 || ((const char *)m->key)[0] != 'g')
        return;
    int group = ((const char *)m->key)[1] - '0';
    char buf[32];
    snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
    int64_t count = strtoll(buf, NULL, 10);
    if (group < 0 || group > 3 || count != g->last[group] + 1)
        g->not_consecutive++;
    if (group >= 0 && group <= 3)
        g->last[group] = count;
}

/* A second sub-topology fed through a repartition topic keeps exactly-once
 * across a kill -9: the per-group counts are consecutive and final. */
static void repartitioned_counts_are_exact_across_kill9(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "regroup", 8);
    char groups_topic[160];
    snprintf(groups_topic, sizeof(groups_topic), "%s.groups", sc.app_id);
    sl_topic_spec spec = {
        .name = groups_topic, .partitions = EOS_PARTITIONS, .replication_factor = 1};
    assert_int_equal(sl_admin_ensure_topic(test_admin, &spec, 30000, errstr, sizeof(errstr)),
                     SL_OK);
    const char *const with_groups[] = {"--groups", groups_topic, NULL};
    test_instance a;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", with_groups);
    test_instance_start(&a);
    assert_true(test_instance_wait_ready(&a, 60000));
    eos_driver d = {.sc = &sc, .from = 0, .to = 20000, .pace_per_ms = 4};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    usleep(2500 * 1000);
    test_instance_kill9(&a);
    test_instance_start(&a);
    pthread_join(producer_thread, NULL);
    bool consumed = eos_wait_consumed(&sc, 120000);
    /* the repartition topic must be drained too: wait for its group */
    group_check g;
    bool exact = false;
    for (int64_t deadline = test_now_ms() + 120000;
         consumed && !exact && test_now_ms() < deadline;) {
        memset(&g, 0, sizeof(g));
        test_scan_topic(test_kafka_bootstrap(), groups_topic, "read_committed", check_groups, &g,
                        60000);
        exact = g.last[0] + g.last[1] + g.last[2] + g.last[3] == 20000;
        if (!exact)
            usleep(500 * 1000);
    }
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    printf("# groups: %lld %lld %lld %lld, %ld out of sequence\n", (long long)g.last[0],
           (long long)g.last[1], (long long)g.last[2], (long long)g.last[3], g.not_consecutive);
    assert_true(consumed);
    assert_true(exact);
    assert_int_equal(g.not_consecutive, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g.last[i], 5000); /* values 0..19999 spread evenly mod 4 */
    test_instance_free(&a);
}

typedef struct upgrade_count {
    long before, after;  /* echoes of records produced before / after the upgrade */
    int64_t first_after; /* the first sequence number of every key after it */
} upgrade_count;

static void count_upgrade_echo(const rd_kafka_message_t *m, void *opaque) {
    upgrade_count *c = opaque;
    if (!m->key || m->key_len < 2 || ((const char *)m->key)[0] != 'k')
        return; /* a marker */
    char buf[32];
    snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
    if (strtoll(buf, NULL, 10) < c->first_after)
        c->before++;
    else
        c->after++;
}

/* Earlier versions committed every source in one group, application.id;
 * now each source has its own group. An upgraded instance takes the old
 * group's offsets into the new one and does not process the records before
 * them again (which would echo them twice). */
static void an_upgrade_keeps_the_offsets_of_the_single_group(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "upgrade", 4);
    eos_driver before = {.sc = &sc, .from = 0, .to = 1000};
    eos_drive(&before);
    /* What an earlier version left: the whole input committed in the group
     * application.id. */
    char why[512];
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, test_kafka_bootstrap(), NULL,
                                              &test_logger, why, sizeof(why));
    assert_non_null(conf);
    assert_int_equal(sl_kafka_conf_set(conf, "group.id", sc.app_id, why, sizeof(why)), SL_OK);
    rd_kafka_t *old_group = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    assert_non_null(old_group);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(EOS_PARTITIONS);
    for (int p = 0; p < EOS_PARTITIONS; p++) {
        int64_t low, high;
        assert_int_equal(
            rd_kafka_query_watermark_offsets(old_group, sc.input, p, &low, &high, 10000), 0);
        rd_kafka_topic_partition_list_add(list, sc.input, p)->offset = high;
    }
    assert_int_equal(rd_kafka_commit(old_group, list, 0), 0);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_destroy(old_group);

    test_instance a;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    test_instance_start_ready(&a, 90000, "the upgraded instance");
    eos_driver after = {.sc = &sc, .from = 1000, .to = 1100};
    eos_drive(&after);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    upgrade_count count = {.first_after = 1000 / 4};
    assert_true(test_scan_topic(test_kafka_bootstrap(), sc.echo, "read_committed",
                                count_upgrade_echo, &count, 60000) >= 0);
    print_message("# echoed after the upgrade: %ld records from before it, %ld after\n",
                  count.before, count.after);
    assert_int_equal(count.before, 0);
    assert_int_equal(count.after, 100);
    test_instance_free(&a);
}

/* A counter of GET /metrics (unlabelled), or -1. */
static long long instance_metric(const test_instance *inst, const char *name) {
    test_answer *a = test_http_call(inst->admin_port, "GET", "/metrics", NULL, NULL, 0);
    long long value = -1;
    size_t len = strlen(name);
    for (const char *line = a ? a->body : NULL; line && *line;) {
        if (strncmp(line, name, len) == 0 && line[len] == ' ') {
            value = atoll(line + len + 1);
            break;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    test_answer_free(a);
    return value;
}

/* With the default num.standby.replicas (1), each of two instances keeps a
 * standby of the other's tasks. When one dies, the survivor takes its
 * tasks from the standbys' checkpoints and restores only the tail, not the
 * changelog; the counts stay exact afterwards. */
static void a_standby_makes_a_moved_task_restore_only_the_tail(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "standby", 16);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_set(&a, "gateway.members.interval.ms=500");
    test_instance_set(&b, "gateway.members.interval.ms=500");
    test_instance_start_both(&a, &b, 90000);
    const long records = 20000;
    eos_driver d = {.sc = &sc, .from = 0, .to = records};
    eos_drive(&d);
    assert_true(eos_wait_consumed(&sc, 120000));
    /* b follows a's two tasks: wait until it has read their changelogs (its
     * count of applied records stays put for 2 s). */
    long long followed = -1, last = -1;
    int64_t still_since = test_now_ms();
    for (int64_t deadline = test_now_ms() + 60000;
         (followed <= 0 || test_now_ms() - still_since < 2000) && test_now_ms() < deadline;
         usleep(200 * 1000)) {
        followed = instance_metric(&b, "sluice_standby_records_total");
        if (followed != last)
            still_since = test_now_ms();
        last = followed;
    }
    long long standbys = instance_metric(&b, "sluice_standby_tasks");
    print_message("# b keeps %lld standbys and applied %lld changelog records to them\n", standbys,
                  followed);
    if (standbys != 2 || followed <= 0)
        test_instance_dump_log(&b, 40);
    assert_int_equal(standbys, 2);
    assert_true(followed > 1000);
    long long restored_before = test_instance_engine_stat(&b, "restored_records");
    int64_t killed = test_now_ms();
    test_instance_kill9(&a);
    /* b owns all four tasks once the group drops a (6 s session). */
    long long assigned = 0, running = 0;
    for (int64_t deadline = test_now_ms() + 60000;
         (assigned != 4 || running != 4) && test_now_ms() < deadline; usleep(100 * 1000)) {
        assigned = test_instance_engine_stat(&b, "tasks_assigned");
        running = test_instance_engine_stat(&b, "tasks_running");
    }
    long long restored = test_instance_engine_stat(&b, "restored_records") - restored_before;
    print_message("# after the kill: b runs %lld tasks %lld ms later, restored %lld changelog "
                  "records for them (their changelogs hold %lld)\n",
                  running, (long long)(test_now_ms() - killed), restored, followed);
    if (running != 4)
        test_instance_dump_log(&b, 40);
    assert_int_equal(running, 4);
    assert_true(restored < followed / 10);
    /* The state b took over is right: the counts go on exactly. */
    eos_driver more = {.sc = &sc, .from = records, .to = records + 4000};
    eos_drive(&more);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&b, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

/* A consumer in `<app>-data` with group.instance.id = `id`: joining fences
 * the instance's static member of that id (as librdkafka 2.0's own rejoin
 * after a broker bounce can, its issue #3437). Polls until it holds an
 * assignment, keeps it 3 s, then leaves the group. */
static bool join_as(const char *app_id, const char *input, const char *id) {
    char why[512], group[160];
    snprintf(group, sizeof(group), "%s-data", app_id);
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, test_kafka_bootstrap(), NULL,
                                              &test_logger, why, sizeof(why));
    if (!conf || sl_kafka_conf_set(conf, "group.id", group, why, sizeof(why)) ||
        sl_kafka_conf_set(conf, "group.instance.id", id, why, sizeof(why)) ||
        sl_kafka_conf_set(conf, "partition.assignment.strategy", "cooperative-sticky", why,
                          sizeof(why)) ||
        sl_kafka_conf_set(conf, "session.timeout.ms", "6000", why, sizeof(why)))
        return false;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk)
        return false;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, input, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    bool assigned = false;
    for (int64_t deadline = test_now_ms() + 30000; !assigned && test_now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m);
        rd_kafka_topic_partition_list_t *assignment = NULL;
        if (!rd_kafka_assignment(rk, &assignment) && assignment) {
            assigned = assignment->cnt > 0;
            rd_kafka_topic_partition_list_destroy(assignment);
        }
    }
    /* Hold the place over a few of the instance's heartbeats (1 s), which
     * the broker answers FENCED_INSTANCE_ID, then leave (unsubscribe sends a
     * LeaveGroup even for a static member). */
    for (int64_t until = test_now_ms() + 3000; assigned && test_now_ms() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_unsubscribe(rk);
    for (int i = 0; i < 10; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return assigned;
}

/* Static membership is on by default. A static member fenced by another
 * member with its group.instance.id gets a fatal error from librdkafka and
 * never consumes again unless the engine replaces the consumer: the
 * instance must close that group's tasks, join again and go on exactly. */
static void a_fenced_static_member_joins_again(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "fenced", 4);
    test_instance a;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    test_instance_start_ready(&a, 90000, "the instance");
    eos_driver first = {.sc = &sc, .from = 0, .to = 2000};
    eos_drive(&first);
    assert_true(eos_wait_consumed(&sc, 120000));
    char path[400], id[64] = "";
    snprintf(path, sizeof(path), "%s/%s/instance.id", a.state_dir, sc.app_id);
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    assert_non_null(fgets(id, sizeof(id), file));
    fclose(file);
    id[strcspn(id, "\n")] = '\0';
    assert_true(join_as(sc.app_id, sc.input, id));
    eos_driver second = {.sc = &sc, .from = 2000, .to = 4000};
    eos_drive(&second);
    bool consumed = eos_wait_consumed(&sc, 90000);
    long long rejoins = test_http_metric(a.admin_port, "sluice_group_rejoins_total");
    print_message("# after the fence: input consumed %s, group rejoins %lld\n",
                  consumed ? "yes" : "no", rejoins);
    if (!consumed || rejoins < 1)
        test_instance_dump_log(&a, 40);
    assert_true(consumed);
    assert_true(rejoins >= 1);
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
}

/* KIP-441: a new instance warms up (standbys of every running task) before
 * it joins, so the tasks that move to it restore only the tail, while the
 * old owner serves them meanwhile. With warmup.max.ms=0 b would restore
 * its tasks' changelogs in full (about half of the records). */
static void a_new_instance_warms_up_before_it_joins(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "warmup", 16);
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", NULL);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", NULL);
    test_instance_set(&a, "gateway.members.interval.ms=500");
    test_instance_set(&b, "gateway.members.interval.ms=500");
    test_instance_start_ready(&a, 90000, "the first instance");
    const long records = 8000;
    eos_driver d = {.sc = &sc, .from = 0, .to = records};
    eos_drive(&d);
    assert_true(eos_wait_consumed(&sc, 120000));
    int64_t started = test_now_ms();
    test_instance_start_ready(&b, 120000, "the new instance");
    long long b_running = 0;
    for (int64_t deadline = test_now_ms() + 60000; b_running < 2 && test_now_ms() < deadline;
         usleep(100 * 1000))
        b_running = test_instance_engine_stat(&b, "tasks_running");
    long long restored = test_instance_engine_stat(&b, "restored_records");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "grep -q 'joining: warmed up' '%s'", b.log_path);
    bool warmed = system(cmd) == 0;
    print_message("# b ready %lld ms after its start, runs %lld tasks, restored %lld changelog "
                  "records for them (of %ld records in)\n",
                  (long long)(test_now_ms() - started), b_running, restored, records);
    if (!warmed || b_running < 2 || restored >= records / 10)
        test_instance_dump_log(&b, 40);
    assert_true(warmed);
    assert_true(b_running >= 2);
    assert_true(restored >= 0 && restored < records / 10);
    eos_driver more = {.sc = &sc, .from = records, .to = records + 4000};
    eos_drive(&more);
    assert_true(eos_wait_consumed(&sc, 120000));
    assert_int_equal(test_instance_stop(&b, 60000), 0);
    assert_int_equal(test_instance_stop(&a, 60000), 0);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(poison_record_goes_to_the_dlq_and_the_stream_continues),
        cmocka_unit_test(crash_inside_an_open_transaction_loses_and_duplicates_nothing),
        cmocka_unit_test(full_record_cache_commits_early_and_counts_stay_exact),
        cmocka_unit_test(restore_rebuilds_the_store_and_a_clean_restart_restores_only_the_tail),
        cmocka_unit_test(instances_join_and_leave_while_records_flow),
        cmocka_unit_test(global_store_is_seen_by_every_instance),
        cmocka_unit_test(repartitioned_counts_are_exact_across_kill9),
        cmocka_unit_test(punctuators_fire_on_wall_clock_and_stream_time),
        cmocka_unit_test(zombie_instance_is_fenced_and_rejoins),
        cmocka_unit_test(eos_counting_is_exact_across_kill9),
        cmocka_unit_test(at_least_once_loses_nothing_and_reports_duplicates),
        cmocka_unit_test(an_upgrade_keeps_the_offsets_of_the_single_group),
        cmocka_unit_test(a_standby_makes_a_moved_task_restore_only_the_tail),
        cmocka_unit_test(a_fenced_static_member_joins_again),
        cmocka_unit_test(a_new_instance_warms_up_before_it_joins),
    };
    /* SLUICE_TEST_FILTER=pattern runs only the matching tests (cmocka glob). */
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    return cmocka_run_group_tests_name("engine", tests, test_broker_setup, test_broker_teardown);
}
