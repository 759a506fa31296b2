/*
 * The gateway against the real broker, with instances of the counter app
 * (tests/apps/counter.c, route GET /agg/{key}) as separate processes:
 *   - a key's aggregate is answered by either instance: one reads its own
 *     store, the other forwards to the owner (and a request that was
 *     already forwarded once is never forwarded again);
 *   - a store that is restoring answers 503 with Retry-After, and then the
 *     exact value, never a partial one (a 404 for a key not restored yet);
 *   - the membership table reflects instances joining and leaving.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "processor/gateway/trust.h"
#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/eos.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

#define PARTITIONS EOS_PARTITIONS
#define N_KEYS     16

/* A counter instance of the scenario (eos.h) under the default guarantee;
 * its gateway refreshes the member table every 500 ms. */
static void instance_init(test_instance *inst, const eos_scenario *sc, const char *name,
                          const char *const *extra) {
    eos_instance_init(inst, sc, test_work_dir, name, NULL, extra);
    test_instance_set(inst, "gateway.members.interval.ms=500");
}

/* Produce `rounds` records per key k0..k<N_KEYS-1>, value = round + key. */
static void produce_inputs(const eos_scenario *sc, int rounds) {
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < N_KEYS; k++) {
            char key[16], value[32];
            int key_len = snprintf(key, sizeof(key), "k%d", k);
            int value_len = snprintf(value, sizeof(value), "%d", r * 100 + k);
            assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(sc->input),
                                               RD_KAFKA_V_KEY(key, (size_t)key_len),
                                               RD_KAFKA_V_VALUE(value, (size_t)value_len),
                                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                               RD_KAFKA_V_END),
                             0);
        }
    assert_int_equal(rd_kafka_flush(producer, 60000), 0);
    rd_kafka_destroy(producer);
}

/* The aggregate the counter must hold for key k after `rounds` rounds,
 * as its JSON answer. */
static void expected_agg(int k, int rounds, char *out, size_t size) {
    long long sum = 0, min = k;
    for (int r = 0; r < rounds; r++)
        sum += r * 100 + k;
    snprintf(out, size, "{\"key\":\"k%d\",\"count\":%d,\"sum\":%lld,\"min\":%lld}", k, rounds, sum,
             min);
}

static bool header_value(const char *headers, const char *name, char *out, size_t size) {
    size_t name_len = strlen(name);
    for (const char *line = headers; line && *line; line = strstr(line, "\r\n")) {
        if (line[0] == '\r')
            line += 2;
        if (strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
            const char *v = line + name_len + 1;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r\n");
            if (len >= size)
                return false;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

/* GET /v1/members of an instance: number of live members and the number of
 * distinct input partitions they claim. */
static void members_of(test_instance *inst, const char *input, int *members, int *claimed,
                       char *first_instance, size_t first_size) {
    char body[16384];
    *members = *claimed = -1;
    if (test_http(inst->admin_port, "GET", "/v1/members", NULL, NULL, 0, NULL, 0, body,
                  sizeof(body)) != 200)
        return;
    json_t *doc = json_loads(body, 0, NULL);
    json_t *list = json_object_get(doc, "members");
    bool seen[PARTITIONS] = {false};
    *members = (int)json_array_size(list);
    *claimed = 0;
    size_t i;
    json_t *member;
    json_array_foreach(list, i, member) {
        if (i == 0 && first_instance)
            snprintf(first_instance, first_size, "%s",
                     json_string_value(json_object_get(member, "instance")));
        json_t *parts = json_object_get(json_object_get(member, "assignment"), input);
        size_t j;
        json_t *p;
        json_array_foreach(parts, j, p) {
            json_int_t partition = json_integer_value(p);
            if (partition >= 0 && partition < PARTITIONS && !seen[partition]) {
                seen[partition] = true;
                (*claimed)++;
            }
        }
    }
    json_decref(doc);
}

static bool await_members(test_instance *inst, const char *input, int members, int timeout_ms) {
    int m = -1, c = -1;
    for (int64_t deadline = test_now_ms() + timeout_ms; test_now_ms() < deadline;) {
        members_of(inst, input, &m, &c, NULL, 0);
        if (m == members && c == PARTITIONS)
            return true;
        usleep(100 * 1000);
    }
    fprintf(stderr, "# members: %d (want %d), partitions claimed: %d\n", m, members, c);
    return false;
}

/* The cluster secret the instances of this work dir share. */
static sl_trust *shared_trust(const test_instance *inst) {
    unsigned char secret[SL_TRUST_MAX_SECRET];
    FILE *file = fopen(inst->secret_path, "rb");
    assert_non_null(file);
    size_t len = fread(secret, 1, sizeof(secret), file);
    fclose(file);
    char errstr[256];
    sl_trust *trust = sl_trust_new(secret, len, NULL, 0, errstr, sizeof(errstr));
    assert_non_null(trust);
    return trust;
}

/* "X-Sluice-Hop: <value>\r\n" for a bodiless request, signed with that
 * secret; the bare value into `value` (SL_TRUST_HOP_MAX bytes). */
static void signed_hop(const test_instance *inst, const char *method, const char *target, char *out,
                       size_t size, char *value) {
    sl_trust *trust = shared_trust(inst);
    assert_int_equal(sl_trust_hop_sign(trust, method, target, NULL, 0, (int64_t)time(NULL),
                                       "test-instance", value, SL_TRUST_HOP_MAX),
                     SL_OK);
    sl_trust_destroy(trust);
    snprintf(out, size, "X-Sluice-Hop: %s\r\n", value);
}

/* The answer to a signed hop is sealed for whoever signed it: open it
 * (its length from Content-Length) into `out`, as an instance would. */
static void open_sealed(const test_instance *inst, const char *hop_value, const char *headers,
                        const char *body, char *out, size_t size) {
    char value[64], context[SL_TRUST_HOP_MAX + 16];
    assert_true(header_value(headers, "X-Sluice-Sealed", value, sizeof(value)));
    assert_string_equal(value, "v1");
    assert_true(header_value(headers, "Content-Length", value, sizeof(value)));
    snprintf(context, sizeof(context), "answer %s", hop_value);
    sl_trust *trust = shared_trust(inst);
    char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(sl_trust_open(trust, context, body, (size_t)atol(value), &plain, &plain_len),
                     SL_TRUST_VALID);
    sl_trust_destroy(trust);
    snprintf(out, size, "%s", plain);
    free(plain);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void a_key_is_answered_by_either_instance(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "gw-route", N_KEYS);
    test_instance a, b;
    instance_init(&a, &sc, "a", NULL);
    instance_init(&b, &sc, "b", NULL);
    test_instance_start(&a);
    test_instance_start(&b);
    if (!test_instance_wait_ready(&a, 90000) || !test_instance_wait_ready(&b, 90000) ||
        !await_members(&a, sc.input, 2, 60000) || !await_members(&b, sc.input, 2, 60000)) {
        test_instance_dump_log(&a, 30);
        test_instance_dump_log(&b, 30);
        fail_msg("instances did not form a group of two");
    }
    const int rounds = 5;
    produce_inputs(&sc, rounds);
    test_instance *both[2] = {&a, &b};
    int forwarded[2] = {0, 0}, local[2] = {0, 0};
    char forwarded_key[2][16] = {"", ""};
    for (int k = 0; k < N_KEYS; k++) {
        char path[32], want[160];
        snprintf(path, sizeof(path), "/agg/k%d", k);
        expected_agg(k, rounds, want, sizeof(want));
        for (int i = 0; i < 2; i++) {
            char body[1024] = "", headers[2048] = "";
            int status = -1;
            /* processing is asynchronous: wait for the final aggregate */
            for (int64_t deadline = test_now_ms() + 60000; test_now_ms() < deadline;) {
                status = test_http(both[i]->http_port, "GET", path, NULL, NULL, 0, headers,
                                   sizeof(headers), body, sizeof(body));
                if (status == 200 && strcmp(body, want) == 0)
                    break;
                usleep(50 * 1000);
            }
            assert_int_equal(status, 200);
            assert_string_equal(body, want);
            char value[256];
            assert_true(header_value(headers, "X-Sluice-Served-By", value, sizeof(value)));
            if (header_value(headers, "X-Sluice-Forwarded-To", value, sizeof(value))) {
                forwarded[i]++;
                snprintf(forwarded_key[i], sizeof(forwarded_key[i]), "k%d", k);
            } else {
                local[i]++;
            }
        }
    }
    fprintf(stderr, "# a: %d local, %d forwarded; b: %d local, %d forwarded\n", local[0],
            forwarded[0], local[1], forwarded[1]);
    /* Each owns some partitions: each reads some keys itself and forwards
     * the others; together every key is read locally exactly once. */
    assert_true(local[0] > 0 && forwarded[0] > 0 && local[1] > 0 && forwarded[1] > 0);
    assert_int_equal(local[0] + local[1], N_KEYS);
    /* A range query (with its query string) is answered the same way by
     * both: the keys of k0's partition in key order, paged. */
    const char *keys[N_KEYS];
    char names[N_KEYS][16];
    size_t n_same = 0;
    int32_t p0 = rd_kafka_msg_partitioner_murmur2_random(NULL, "k0", 2, PARTITIONS, NULL, NULL);
    for (int k = 0; k < N_KEYS; k++) {
        snprintf(names[k], sizeof(names[k]), "k%d", k);
        if (rd_kafka_msg_partitioner_murmur2_random(NULL, names[k], strlen(names[k]), PARTITIONS,
                                                    NULL, NULL) == p0)
            keys[n_same++] = names[k];
    }
    qsort(keys, n_same, sizeof(keys[0]), compare_strings);
    char want_scan[512] = "{\"keys\":[";
    for (size_t i = 1; i < n_same && i < 3; i++) { /* skip=1&limit=2 */
        strcat(want_scan, i > 1 ? ",\"" : "\"");
        strcat(want_scan, keys[i]);
        strcat(want_scan, "\"");
    }
    strcat(want_scan, "]}");
    for (int i = 0; i < 2; i++) {
        char scan_body[1024];
        assert_int_equal(test_http(both[i]->http_port, "GET", "/agg/k0/scan?skip=1&limit=2", NULL,
                                   NULL, 0, NULL, 0, scan_body, sizeof(scan_body)),
                         200);
        assert_string_equal(scan_body, want_scan);
    }
    /* A request that already took its one hop (signed with the cluster
     * secret, as an instance would) is not forwarded again. */
    char path[32], body[1024], headers[2048], value[64], hop[SL_TRUST_HOP_MAX + 32];
    char hop_value[SL_TRUST_HOP_MAX], plain[1024];
    snprintf(path, sizeof(path), "/agg/%s", forwarded_key[0]);
    signed_hop(&a, "GET", path, hop, sizeof(hop), hop_value);
    assert_int_equal(test_http(a.http_port, "GET", path, hop, NULL, 0, headers, sizeof(headers),
                               body, sizeof(body)),
                     503);
    assert_true(header_value(headers, "Retry-After", value, sizeof(value)));
    open_sealed(&a, hop_value, headers, body, plain, sizeof(plain));
    json_t *error = json_loads(plain, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(error, "code")), 503);
    assert_non_null(json_string_value(json_object_get(error, "request_id")));
    json_decref(error);
    /* A hop header without a valid MAC is refused, whoever sends it. */
    assert_int_equal(test_http(a.http_port, "GET", path, "X-Sluice-Hop: 1\r\n", NULL, 0, NULL, 0,
                               body, sizeof(body)),
                     401);
    /* An unknown key is a 404 from the owner, relayed. */
    assert_int_equal(test_http(a.http_port, "GET", "/agg/never-seen", NULL, NULL, 0, NULL, 0, body,
                               sizeof(body)),
                     404);
    assert_int_equal(test_instance_stop(&a, 30000), 0);
    assert_int_equal(test_instance_stop(&b, 30000), 0);
    test_instance_free(&a);
    test_instance_free(&b);
}

static void a_restoring_store_answers_503_then_the_exact_value(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "gw-restore", N_KEYS);
    /* A long changelog written directly, the key asked for last: a read of
     * a half-restored store would answer 404 for it. */
    char changelog[200];
    snprintf(changelog, sizeof(changelog), "%s-agg-changelog", sc.app_id);
    static const char *const compact[] = {"cleanup.policy", "compact", NULL};
    test_broker_create_topic(test_admin, changelog, PARTITIONS, 1, compact);
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    const long filler = 200000;
    for (long i = 0; i < filler; i++) {
        char key[32];
        int key_len = snprintf(key, sizeof(key), "filler-%ld", i);
        while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(changelog),
                                 RD_KAFKA_V_KEY(key, (size_t)key_len), RD_KAFKA_V_VALUE("1,1,1", 5),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(producer, 10);
    }
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(changelog),
                                       RD_KAFKA_V_KEY("target", 6), RD_KAFKA_V_VALUE("7,70,3", 6),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(producer, 60000), 0);
    rd_kafka_destroy(producer);

    test_instance a;
    const char *const slow_restore[] = {"--set", "restore.batch.records=20", NULL};
    instance_init(&a, &sc, "a", slow_restore);
    test_instance_start(&a);
    const char *want = "{\"key\":\"target\",\"count\":7,\"sum\":70,\"min\":3}";
    int restoring_503 = 0, other_503 = 0, status = -1;
    char body[1024] = "", headers[2048];
    for (int64_t deadline = test_now_ms() + 120000; test_now_ms() < deadline;) {
        status = test_http(a.http_port, "GET", "/agg/target", NULL, NULL, 0, headers,
                           sizeof(headers), body, sizeof(body));
        if (status == 200)
            break;
        if (status == 503) {
            char value[16];
            assert_true(header_value(headers, "Retry-After", value, sizeof(value)));
            if (strstr(body, "restoring"))
                restoring_503++;
            else
                other_503++;
        } else if (status != -1) { /* -1: the server is not listening yet */
            test_instance_dump_log(&a, 30);
            fail_msg("answered %d (%s) before the restore finished", status, body);
        }
        usleep(10 * 1000);
    }
    fprintf(stderr, "# 503 while restoring: %d, 503 before the assignment: %d\n", restoring_503,
            other_503);
    assert_int_equal(status, 200);
    assert_string_equal(body, want);
    assert_true(restoring_503 > 0);
    assert_int_equal(test_instance_stop(&a, 30000), 0);
    test_instance_free(&a);
}

static void membership_reflects_join_and_leave(void **state) {
    (void)state;
    test_need_broker();
    eos_scenario sc;
    eos_scenario_init(test_admin, &sc, "gw-members", N_KEYS);
    /* A long expiry: only the leaving instance's tombstone can remove it
     * within this test. */
    const char *const slow_expiry[] = {"--set", "gateway.members.expiry.ms=600000", NULL};
    test_instance a, b;
    instance_init(&a, &sc, "a", slow_expiry);
    instance_init(&b, &sc, "b", slow_expiry);
    test_instance_start(&a);
    assert_true(test_instance_wait_ready(&a, 90000));
    assert_true(await_members(&a, sc.input, 1, 60000));
    test_instance_start(&b);
    assert_true(test_instance_wait_ready(&b, 90000));
    assert_true(await_members(&a, sc.input, 2, 60000));
    assert_true(await_members(&b, sc.input, 2, 60000));
    assert_int_equal(test_instance_stop(&b, 30000), 0);
    assert_true(await_members(&a, sc.input, 1, 60000));
    /* the one left is a, owning everything again */
    char body[4096];
    assert_int_equal(test_http(a.admin_port, "GET", "/v1/metadata/agg/k1", NULL, NULL, 0, NULL, 0,
                               body, sizeof(body)),
                     200);
    json_t *doc = json_loads(body, 0, NULL);
    char first[64] = "";
    int members, claimed;
    members_of(&a, sc.input, &members, &claimed, first, sizeof(first));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(doc, "owner"), "instance")), first);
    json_decref(doc);
    assert_int_equal(test_instance_stop(&a, 30000), 0);
    test_instance_free(&a);
    test_instance_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_key_is_answered_by_either_instance),
        cmocka_unit_test(a_restoring_store_answers_503_then_the_exact_value),
        cmocka_unit_test(membership_reflects_join_and_leave),
    };
    return cmocka_run_group_tests(tests, test_broker_setup, test_broker_teardown);
}
