/*
 * Broker bounce (docs RELIABILITY shape 5), modelled on Kafka Streams'
 * streams_broker_bounce_test: two counter instances (tests/apps/counter.c)
 * under exactly_once_v2 with transaction.timeout.ms 10 s process a stream of
 * keyed, sequence-numbered records while the test takes the single broker
 * away and brings it back on the same port and data dir: a clean stop
 * (SIGTERM), a crash (SIGKILL), and a crash again. The instances are never
 * restarted: they must find the broker again on their own, and the
 * read_committed verifier must then see every input echoed exactly once,
 * aggregates equal to a recomputation, nothing of an aborted transaction and
 * a readable marker at the end of every output partition.
 *
 * The broker is bounced with scripts/harness-broker, so it must be the one
 * scripts/harness started; a broker given in SLUICE_TEST_KAFKA_BOOTSTRAP is
 * not ours to stop, and the test skips.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/eos.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

static char bounce_script[PATH_MAX]; /* scripts/harness-broker */

static int setup(void **state) {
    if (test_broker_setup(state) != 0)
        return -1;
    /* <repo>/build/<variant>/tests/integration/test_broker_bounce */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *repo = dirname(dirname(dirname(dirname(dirname(self)))));
    snprintf(bounce_script, sizeof(bounce_script), "%s/scripts/harness-broker", repo);
    return 0;
}

/* Run scripts/harness-broker ACTION and return its exit status (-1 if it
 * did not exit). The broker it starts must not inherit this process's
 * descriptors (sockets of the instances' clients, the test's output), so
 * everything above stderr is closed in the child. */
static int harness_broker(const char *action) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execl(bounce_script, bounce_script, action, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* True if scripts/harness started the broker, so that it may be bounced. */
static bool broker_is_ours(void) {
    const char *harness_dir = getenv("SLUICE_TEST_HARNESS_DIR");
    char run[PATH_MAX];
    snprintf(run, sizeof(run), "%s/kafka.run", harness_dir ? harness_dir : "/nonexistent");
    return harness_dir && access(run, X_OK) == 0;
}

/* Count what a reader with `isolation` sees in `topic`. */
static void count_record(const rd_kafka_message_t *m, void *opaque) {
    (void)m;
    (*(long *)opaque)++;
}

static long count_records(const char *topic, const char *isolation) {
    long n = 0;
    test_scan_topic(test_kafka_bootstrap(), topic, isolation, count_record, &n, 60000);
    return n;
}

typedef struct bounce {
    const char *how; /* "stop" (SIGTERM) or "kill" (SIGKILL) */
    int after_ms;    /* load before the bounce */
    int down_ms;     /* how long the broker stays away */
} bounce;

static void counting_is_exact_across_broker_bounces(void **state) {
    (void)state;
    test_need_broker();
    if (!broker_is_ours()) {
        fprintf(stderr, "# the broker was given in SLUICE_TEST_KAFKA_BOOTSTRAP, not started by "
                        "scripts/harness: it cannot be stopped and restarted; skipped\n");
        skip();
    }
    assert_int_equal(access(bounce_script, X_OK), 0);

    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "bounce", 40);
    /* Kafka Streams' EOS timeout, so a transaction the broker lost track of
     * is aborted by the coordinator while the test still runs. */
    const char *const txn_timeout[] = {"--set", "kafka.producer.transaction.timeout.ms=10000",
                                       NULL};
    test_instance a, b;
    eos_instance_init(&a, &sc, test_work_dir, "a", "exactly_once_v2", txn_timeout);
    eos_instance_init(&b, &sc, test_work_dir, "b", "exactly_once_v2", txn_timeout);
    test_instance_start_both(&a, &b, 60000);

    /* About 2 records/ms for ~60 s: the load spans the bounces. */
    eos_driver d = {.sc = &sc, .from = 0, .to = 120000, .pace_per_ms = 2};
    pthread_t producer_thread;
    pthread_create(&producer_thread, NULL, eos_drive, &d);
    const bounce bounces[] = {
        {"stop", 4000, 6000},
        {"kill", 3000, 10000},
        {"kill", 3000, 6000},
    };
    for (size_t i = 0; i < sizeof(bounces) / sizeof(bounces[0]); i++) {
        usleep((useconds_t)bounces[i].after_ms * 1000);
        int64_t t0 = test_now_ms();
        int rc = harness_broker(bounces[i].how);
        if (rc != 0)
            fail_msg("harness-broker %s: status %d", bounces[i].how, rc);
        int64_t down_since = test_now_ms();
        usleep((useconds_t)bounces[i].down_ms * 1000);
        rc = harness_broker("start");
        if (rc != 0)
            fail_msg("harness-broker start: status %d", rc);
        printf("# bounce %zu: %s took %lld ms, down %lld ms, back %lld ms later\n", i + 1,
               bounces[i].how, (long long)(down_since - t0), (long long)bounces[i].down_ms,
               (long long)(test_now_ms() - down_since));
    }
    pthread_join(producer_thread, NULL);

    bool consumed = eos_wait_consumed(&sc, 120000);
    /* Neither instance was restarted: both are still there and ready. */
    bool a_ready = test_instance_wait_ready(&a, 60000);
    bool b_ready = test_instance_wait_ready(&b, 60000);
    long long aborts = test_http_metric(a.admin_port, "sluice_transaction_aborts_total") +
                       test_http_metric(b.admin_port, "sluice_transaction_aborts_total");
    long long resets = test_http_metric(a.admin_port, "sluice_producer_resets_total") +
                       test_http_metric(b.admin_port, "sluice_producer_resets_total");
    int status_a = test_instance_stop(&a, 60000), status_b = test_instance_stop(&b, 60000);
    if (!consumed || !a_ready || !b_ready || status_a != 0 || status_b != 0) {
        test_instance_dump_log(&a, 60);
        test_instance_dump_log(&b, 60);
    }
    assert_int_equal(a.restarts + b.restarts, 0);
    assert_true(consumed);
    assert_true(a_ready);
    assert_true(b_ready);
    assert_int_equal(status_a, 0);
    assert_int_equal(status_b, 0);
    /* What aborted transactions left in the log (read_uncommitted sees it,
     * read_committed must not: the verifier below counts every echo). */
    printf("# echo topic: %ld records read_uncommitted, %ld read_committed; %lld aborted "
           "transactions, %lld new producers\n",
           count_records(sc.echo, "read_uncommitted"), count_records(sc.echo, "read_committed"),
           aborts, resets);
    eos_verify_exactly_once(&sc);
    test_instance_free(&a);
    test_instance_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counting_is_exact_across_broker_bounces),
    };
    return cmocka_run_group_tests_name("broker_bounce", tests, setup, test_broker_teardown);
}
