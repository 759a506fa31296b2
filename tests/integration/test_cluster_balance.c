/*
 * Integration test: a cluster of `sluice run` processes (identity and
 * dialogs in one engine) balances every source topic across its instances,
 * not only the total number of partitions.
 *
 * The engine reads six source topics (users.commands, the users-by-id
 * repartition topic, tokens.commands, users.events as the dialogs' users
 * feed, dialogs.commands and the dialogs-by-user repartition topic). With
 * one consumer group for all of them, cooperative-sticky balances the total
 * count only, so one instance may own every dialogs.commands partition and
 * do all the message work; with one group per source, each instance owns
 * floor(n/k) or ceil(n/k) of every source topic's n partitions.
 *
 * The cluster grows from 1 to 3 instances (each joining while the others
 * run), then shrinks to 2 and 1 by SIGTERM, one at a time. After each step
 * GET /v1/members of a live instance must show, for every source topic and
 * for as long as STABLE_MS:
 *   - exactly the running instances as members;
 *   - every partition claimed by exactly one of them;
 *   - per-instance counts that differ by at most 1.
 * Each step prints the counts it saw (TAP diagnostics); a step that does not
 * get there within STEP_MS fails with the last counts seen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/broker.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

#define PARTITIONS     6  /* of every identity and dialogs topic */
#define MAX_TOPICS     16 /* the six known sources and any the engine adds */
#define MAX_PARTITIONS 64 /* of one source topic */
#define READY_MS       120000
#define STEP_MS        60000 /* a graceful leave may wait for a session timeout */
#define STABLE_MS      2000  /* a balanced table must stay so, not flash by */
#define STOP_MS        60000

static test_cluster cluster; /* instances a, b, c; started and stopped by the test */

/* The source topics, and their partition counts as the broker has them. */
static char topics[MAX_TOPICS][256];
static int topic_partitions[MAX_TOPICS];
static int n_topics;

static int setup(void **state) {
    (void)state;
    if (!test_kafka_bootstrap())
        return 0;
    if (test_cluster_init(&cluster, "balance", TEST_CLUSTER_MAX) != 0 ||
        test_cluster_sign(&cluster) != 0)
        return -1;
    for (int i = 0; i < cluster.n; i++) {
        test_instance *inst = &cluster.instances[i];
        test_instance_set(inst, "dialogs.topic.prefix=%s", cluster.prefix);
        test_instance_set(inst, "identity.topic.partitions=%d", PARTITIONS);
        test_instance_set(inst, "dialogs.topic.partitions=%d", PARTITIONS);
        test_instance_set(inst, "reply.partitions=2");
        /* The table follows each assignment change within half a second. */
        test_instance_set(inst, "gateway.members.interval.ms=500");
        test_instance_set(inst, "gateway.members.expiry.ms=3000");
    }
    /* Stopped by the teardown (whatever still runs) from here on. */
    cluster.started = true;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return test_cluster_stop(&cluster);
}

#define NEED_BROKER() test_skip_unless(cluster.started, TEST_NO_BROKER)

/* ---- the source topics ---------------------------------------------------- */

/* The partition count of `topic` on the broker, waiting up to 10 s for it
 * to appear; fails the test if it does not. */
static int broker_partitions(rd_kafka_t *client, const char *topic) {
    rd_kafka_topic_t *handle = rd_kafka_topic_new(client, topic, NULL);
    assert_non_null(handle);
    int partitions = -1;
    for (int64_t deadline = test_now_ms() + 10000; partitions < 0 && test_now_ms() < deadline;) {
        const rd_kafka_metadata_t *md = NULL;
        if (rd_kafka_metadata(client, 0, handle, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topics[0].partition_cnt > 0)
            partitions = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (partitions < 0)
            usleep(200 * 1000);
    }
    rd_kafka_topic_destroy(handle);
    if (partitions < 0)
        fail_msg("topic %s has no metadata on the broker", topic);
    if (partitions > MAX_PARTITIONS)
        fail_msg("topic %s has %d partitions, more than the test handles (%d)", topic, partitions,
                 MAX_PARTITIONS);
    return partitions;
}

static int topic_index(const char *topic) {
    for (int t = 0; t < n_topics; t++)
        if (strcmp(topics[t], topic) == 0)
            return t;
    return -1;
}

/* Add `topic` (printf-formatted) with its partition count from the broker. */
static void __attribute__((format(printf, 2, 3)))
add_topic(rd_kafka_t *client, const char *fmt, ...) {
    assert_true(n_topics < MAX_TOPICS);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(topics[n_topics], sizeof(topics[0]), fmt, ap);
    va_end(ap);
    topic_partitions[n_topics] = broker_partitions(client, topics[n_topics]);
    n_topics++;
}

/* Every source topic of the engine: the ones named by identity.c and
 * dialogs.c (with the prefix and application id this file sets), and any
 * other that the single instance's membership record names (a source the
 * engine gains later is checked too). */
static void learn_source_topics(void) {
    rd_kafka_t *client = test_producer(test_kafka_bootstrap(), NULL);
    const char *prefix = cluster.prefix, *app_id = cluster.app_id;
    add_topic(client, "%susers.commands", prefix);
    add_topic(client, "%s-users-by-id-repartition", app_id);
    add_topic(client, "%stokens.commands", prefix);
    add_topic(client, "%susers.events", prefix);
    add_topic(client, "%sdialogs.commands", prefix);
    add_topic(client, "%s-dialogs-by-user-repartition", app_id);
    test_answer *a =
        test_http_call(cluster.instances[0].admin_port, "GET", "/v1/members", NULL, NULL, 0);
    size_t i;
    json_t *member;
    json_array_foreach(a->json ? json_object_get(a->json, "members") : NULL, i, member) {
        const char *topic;
        json_t *parts;
        json_object_foreach(json_object_get(member, "assignment"), topic, parts) {
            if (topic_index(topic) < 0) {
                fprintf(stderr, "# also a source: %s\n", topic);
                add_topic(client, "%s", topic);
            }
        }
    }
    test_answer_free(a);
    rd_kafka_destroy(client);
}

/* The topic's name without this run's prefix or application id. */
static const char *short_name(const char *topic) {
    size_t prefix_len = strlen(cluster.prefix), app_len = strlen(cluster.app_id);
    if (strncmp(topic, cluster.prefix, prefix_len) == 0)
        return topic + prefix_len;
    if (strncmp(topic, cluster.app_id, app_len) == 0 && topic[app_len] == '-')
        return topic + app_len + 1;
    return topic;
}

/* ---- the membership table ------------------------------------------------- */

/* What one GET /v1/members showed. */
typedef struct census {
    int status;                               /* of the request */
    int listed[TEST_CLUSTER_MAX];             /* records per instance */
    int strangers;                            /* records of no running instance */
    int counts[MAX_TOPICS][TEST_CLUSTER_MAX]; /* partitions claimed per instance */
    int claims[MAX_TOPICS][MAX_PARTITIONS];   /* claimants per partition */
    int out_of_range;                         /* claims of partitions >= the count */
    char unknown_topic[256];                  /* a claimed topic not in topics[], or "" */
} census;

/* The index of the running instance whose HTTP port ends `address`, or -1. */
static int instance_of(const char *address) {
    for (int i = 0; address && i < cluster.n; i++) {
        if (!cluster.instances[i].pid)
            continue;
        char port[16];
        snprintf(port, sizeof(port), ":%d", cluster.instances[i].http_port);
        size_t n = strlen(address), p = strlen(port);
        if (n >= p && strcmp(address + n - p, port) == 0)
            return i;
    }
    return -1;
}

static void take_census(int asked, census *c) {
    memset(c, 0, sizeof(*c));
    test_answer *a =
        test_http_call(cluster.instances[asked].admin_port, "GET", "/v1/members", NULL, NULL, 0);
    c->status = a->status;
    size_t i;
    json_t *member;
    json_array_foreach(a->json ? json_object_get(a->json, "members") : NULL, i, member) {
        int owner = instance_of(json_string_value(json_object_get(member, "address")));
        if (owner < 0)
            c->strangers++;
        else
            c->listed[owner]++;
        const char *topic;
        json_t *parts;
        json_object_foreach(json_object_get(member, "assignment"), topic, parts) {
            int t = topic_index(topic);
            if (t < 0) {
                snprintf(c->unknown_topic, sizeof(c->unknown_topic), "%s", topic);
                continue;
            }
            size_t j;
            json_t *partition;
            json_array_foreach(parts, j, partition) {
                json_int_t p = json_integer_value(partition);
                if (p < 0 || p >= topic_partitions[t]) {
                    c->out_of_range++;
                    continue;
                }
                c->claims[t][p]++;
                if (owner >= 0)
                    c->counts[t][owner]++;
            }
        }
    }
    test_answer_free(a);
}

/* Is the cluster as the step wants it? If not, `why` says what is off. */
static bool balanced(const census *c, char *why, size_t size) {
    why[0] = '\0';
    if (c->status != 200) {
        snprintf(why, size, "GET /v1/members answered %d", c->status);
        return false;
    }
    if (c->strangers > 0) {
        snprintf(why, size, "%d member(s) that are not running instances", c->strangers);
        return false;
    }
    for (int i = 0; i < cluster.n; i++)
        if ((cluster.instances[i].pid != 0) != (c->listed[i] == 1)) {
            snprintf(why, size, "instance %d (%s) listed %d times", i,
                     cluster.instances[i].pid ? "running" : "stopped", c->listed[i]);
            return false;
        }
    if (c->unknown_topic[0] || c->out_of_range > 0) {
        snprintf(why, size, "claims outside the known sources (%s, %d out of range)",
                 c->unknown_topic[0] ? c->unknown_topic : "-", c->out_of_range);
        return false;
    }
    for (int t = 0; t < n_topics; t++) {
        for (int p = 0; p < topic_partitions[t]; p++)
            if (c->claims[t][p] != 1) {
                snprintf(why, size, "%s partition %d claimed by %d members", short_name(topics[t]),
                         p, c->claims[t][p]);
                return false;
            }
        int least = MAX_PARTITIONS + 1, most = -1;
        for (int i = 0; i < cluster.n; i++) {
            if (!cluster.instances[i].pid)
                continue;
            least = c->counts[t][i] < least ? c->counts[t][i] : least;
            most = c->counts[t][i] > most ? c->counts[t][i] : most;
        }
        if (most - least > 1) {
            snprintf(why, size, "%s is unbalanced: %d vs %d partitions", short_name(topics[t]),
                     most, least);
            return false;
        }
    }
    return true;
}

static void print_census(const census *c) {
    static const char *const names[TEST_CLUSTER_MAX] = {"a", "b", "c"};
    for (int t = 0; t < n_topics; t++) {
        char line[256];
        int len = snprintf(line, sizeof(line), "#   %-28s (%2d):", short_name(topics[t]),
                           topic_partitions[t]);
        for (int i = 0; i < cluster.n && len > 0 && (size_t)len < sizeof(line); i++)
            if (cluster.instances[i].pid)
                len += snprintf(line + len, sizeof(line) - (size_t)len, " %s=%d", names[i],
                                c->counts[t][i]);
        fprintf(stderr, "%s\n", line);
    }
}

/* Poll the table of a running instance until it is balanced (see the top
 * of the file) for STABLE_MS; print the counts; fail with the last counts
 * seen if that does not happen within STEP_MS. */
static void await_balance(const char *step) {
    int running = 0, asked = -1;
    for (int i = 0; i < cluster.n; i++)
        if (cluster.instances[i].pid) {
            running++;
            asked = asked < 0 ? i : asked;
        }
    assert_true(asked >= 0);
    int64_t start = test_now_ms(), since = -1;
    census c;
    char why[512] = "";
    for (;;) {
        take_census(asked, &c);
        int64_t now = test_now_ms();
        if (balanced(&c, why, sizeof(why))) {
            since = since < 0 ? now : since;
            if (now - since >= STABLE_MS)
                break;
        } else {
            since = -1;
        }
        if (now - start >= STEP_MS) {
            fprintf(stderr, "# %s (%d running): not balanced within %d s: %s; last counts:\n", step,
                    running, STEP_MS / 1000, why);
            print_census(&c);
            fail_msg("%s: not every source topic is balanced (%s)", step, why);
        }
        usleep(200 * 1000);
    }
    fprintf(stderr, "# %s (%d running): balanced %.1f s after the step\n", step, running,
            (double)(since - start) / 1000.0);
    print_census(&c);
}

/* ---- the test ------------------------------------------------------------- */

static void join(int i, const char *step) {
    test_instance_start_ready(&cluster.instances[i], READY_MS, step);
    await_balance(step);
}

static void leave(int i, const char *step) {
    int status = test_instance_stop(&cluster.instances[i], STOP_MS);
    if (status != 0) {
        test_instance_dump_log(&cluster.instances[i], 40);
        fail_msg("%s: the instance exited with %d", step, status);
    }
    await_balance(step);
}

static void every_source_topic_is_balanced_as_instances_join_and_leave(void **state) {
    (void)state;
    NEED_BROKER();
    int64_t start = test_now_ms();
    test_instance_start_ready(&cluster.instances[0], READY_MS, "a starts");
    learn_source_topics();
    await_balance("a starts");
    join(1, "b joins");
    join(2, "c joins");
    leave(2, "c leaves");
    leave(1, "b leaves");
    fprintf(stderr, "# the whole cycle took %.1f s\n", (double)(test_now_ms() - start) / 1000.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_source_topic_is_balanced_as_instances_join_and_leave),
    };
    return cmocka_run_group_tests_name("cluster_balance", tests, setup, teardown);
}
