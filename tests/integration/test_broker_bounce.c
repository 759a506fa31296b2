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
#include "tests/support/eos.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

static rd_kafka_t *admin;
static char work_dir[64];
static char bounce_script[PATH_MAX]; /* scripts/harness-broker */

static int setup(void **state) {
    (void)state;
    const char *bootstrap = test_kafka_bootstrap();
    if (!bootstrap)
        return 0;
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &test_logger, errstr, sizeof(errstr));
    admin = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    snprintf(work_dir, sizeof(work_dir), "/tmp/sluice-bounce-test-XXXXXX");
    /* <repo>/build/<variant>/tests/integration/test_broker_bounce */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *repo = dirname(dirname(dirname(dirname(dirname(self)))));
    snprintf(bounce_script, sizeof(bounce_script), "%s/scripts/harness-broker", repo);
    return admin && mkdtemp(work_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (admin)
        rd_kafka_destroy(admin);
    if (work_dir[0] && !getenv("SLUICE_TEST_KEEP")) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "# could not remove %s\n", work_dir);
    }
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

/* The value of an unlabelled counter in the instance's /metrics, or -1. */
static long long metric(test_instance *inst, const char *name) {
    static char body[1 << 17];
    if (test_http(inst->http_port, "GET", "/metrics", NULL, NULL, 0, NULL, 0, body, sizeof(body)) !=
        200)
        return -1;
    size_t len = strlen(name);
    for (const char *line = body; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp(line, name, len) == 0 && line[len] == ' ')
            return strtoll(line + len + 1, NULL, 10);
    return -1;
}

typedef struct bounce {
    const char *how; /* "stop" (SIGTERM) or "kill" (SIGKILL) */
    int after_ms;    /* load before the bounce */
    int down_ms;     /* how long the broker stays away */
} bounce;

static void counting_is_exact_across_broker_bounces(void **state) {
    (void)state;
    if (!admin) {
        fprintf(stderr, "# SLUICE_TEST_KAFKA_BOOTSTRAP not set: skipped\n");
        skip();
    }
    if (!broker_is_ours()) {
        fprintf(stderr, "# the broker was given in SLUICE_TEST_KAFKA_BOOTSTRAP, not started by "
                        "scripts/harness: it cannot be stopped and restarted; skipped\n");
        skip();
    }
    assert_int_equal(access(bounce_script, X_OK), 0);

    eos_scenario sc;
    eos_scenario_init(admin, &sc, "bounce", 40);
    /* Kafka Streams' EOS timeout, so a transaction the broker lost track of
     * is aborted by the coordinator while the test still runs. */
    const char *const txn_timeout[] = {"--set", "kafka.producer.transaction.timeout.ms=10000",
                                       NULL};
    test_instance a, b;
    eos_instance_init(&a, &sc, work_dir, "a", "exactly_once_v2", txn_timeout);
    eos_instance_init(&b, &sc, work_dir, "b", "exactly_once_v2", txn_timeout);
    test_instance_start(&a);
    test_instance_start(&b);
    if (!test_instance_wait_ready(&a, 60000) || !test_instance_wait_ready(&b, 60000)) {
        test_instance_dump_log(&a, 30);
        test_instance_dump_log(&b, 30);
        fail_msg("instances did not become ready");
    }

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
    long long aborts = metric(&a, "sluice_transaction_aborts_total") +
                       metric(&b, "sluice_transaction_aborts_total");
    long long resets =
        metric(&a, "sluice_producer_resets_total") + metric(&b, "sluice_producer_resets_total");
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
    return cmocka_run_group_tests_name("broker_bounce", tests, setup, teardown);
}
