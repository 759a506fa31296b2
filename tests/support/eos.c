/* eos.c: the exactly-once system-test kit (see eos.h). */
#include "tests/support/eos.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/testutil.h"

void eos_scenario_init(rd_kafka_t *admin, eos_scenario *sc, const char *name, int n_keys) {
    memset(sc, 0, sizeof(*sc));
    test_unique_name(sc->app_id, sizeof(sc->app_id), name);
    snprintf(sc->input, sizeof(sc->input), "%s.data", sc->app_id);
    snprintf(sc->echo, sizeof(sc->echo), "%s.echo", sc->app_id);
    snprintf(sc->agg, sizeof(sc->agg), "%s.agg", sc->app_id);
    snprintf(sc->dlq, sizeof(sc->dlq), "%s-dlq", sc->app_id);
    sc->n_keys = n_keys;
    const char *topics[] = {sc->input, sc->echo, sc->agg};
    for (int i = 0; i < 3; i++)
        test_broker_create_topic(admin, topics[i], EOS_PARTITIONS, 1, NULL);
}

void eos_instance_init(test_instance *inst, const eos_scenario *sc, const char *work_dir,
                       const char *name, const char *guarantee, const char *const *extra) {
    const char *args[] = {"--input", sc->input, "--echo", sc->echo, "--agg", sc->agg, NULL};
    char inst_name[160];
    snprintf(inst_name, sizeof(inst_name), "%s-%s", sc->app_id, name);
    test_instance_init(inst, "counter", work_dir, inst_name, args);
    test_instance_set(inst, "application.id=%s", sc->app_id);
    if (guarantee)
        test_instance_set(inst, "processing.guarantee=%s", guarantee);
    test_instance_set(inst, "bootstrap.servers=%s", test_kafka_bootstrap());
    test_instance_set_fast_failover(inst);
    for (size_t i = 0; extra && extra[i] && inst->n_args < 56; i++)
        snprintf(inst->args[inst->n_args++], sizeof(inst->args[0]), "%s", extra[i]);
}

/* ---- the driver --------------------------------------------------------- */

/* Runs on the driver's thread (inside rd_kafka_poll/flush). */
static void count_failed_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    long *failed = opaque;
    if (m->err) {
        if (*failed == 0)
            fprintf(stderr, "# driver: delivery failed: %s\n", rd_kafka_err2str(m->err));
        (*failed)++;
    }
}

void *eos_drive(void *arg) {
    eos_driver *d = arg;
    eos_scenario *sc = d->sc;
    char errstr[512];
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_PRODUCER, test_kafka_bootstrap(), NULL,
                                              &test_logger, errstr, sizeof(errstr));
    if (!conf || sl_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
        sl_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)))
        fail_msg("driver conf: %s", errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, count_failed_delivery);
    rd_kafka_conf_set_opaque(conf, &sc->failed_deliveries);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!producer)
        fail_msg("driver producer: %s", errstr);
    int64_t started = test_now_ms();
    for (long i = d->from; i < d->to; i++) {
        int k = (int)(i % sc->n_keys);
        char key[16], value[32];
        int key_len = snprintf(key, sizeof(key), "k%d", k);
        int value_len = snprintf(value, sizeof(value), "%" PRId64, sc->per_key[k]++);
        while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(sc->input),
                                 RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, value_len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(producer, 10);
        if (d->poison_value && i == (d->from + d->to) / 2) {
            rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(sc->input), RD_KAFKA_V_KEY("k0", 2),
                              RD_KAFKA_V_VALUE((void *)d->poison_value, strlen(d->poison_value)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        }
        if (d->pace_per_ms > 0 && (i - d->from) % 1000 == 999) {
            int64_t due = started + (i - d->from) / d->pace_per_ms;
            int64_t now = test_now_ms();
            if (due > now)
                usleep((useconds_t)(due - now) * 1000);
            rd_kafka_poll(producer, 0);
        }
    }
    if (rd_kafka_flush(producer, 60000))
        fprintf(stderr, "# driver: flush failed\n");
    rd_kafka_destroy(producer);
    sc->n_records = d->to;
    return NULL;
}

/* ---- waiting for the group to finish ------------------------------------ */

bool eos_wait_consumed(const eos_scenario *sc, int timeout_ms) {
    char errstr[512];
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, test_kafka_bootstrap(), NULL,
                                              &test_logger, errstr, sizeof(errstr));
    /* The engine commits in one group per source: the counter's source is
     * "data". */
    char group[300];
    snprintf(group, sizeof(group), "%s-data", sc->app_id);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    bool done = false;
    for (int64_t deadline = test_now_ms() + timeout_ms; !done && test_now_ms() < deadline;) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(EOS_PARTITIONS);
        for (int p = 0; p < EOS_PARTITIONS; p++)
            rd_kafka_topic_partition_list_add(list, sc->input, p);
        done = rd_kafka_committed(rk, list, 10000) == 0;
        for (int p = 0; done && p < EOS_PARTITIONS; p++) {
            int64_t low, high;
            int64_t committed = list->elems[p].offset < 0 ? 0 : list->elems[p].offset;
            done = rd_kafka_query_watermark_offsets(rk, sc->input, p, &low, &high, 10000) == 0 &&
                   committed >= high; /* an empty partition has nothing to commit */
        }
        rd_kafka_topic_partition_list_destroy(list);
        if (!done)
            usleep(500 * 1000);
    }
    rd_kafka_destroy(rk);
    return done;
}

/* ---- the verifier -------------------------------------------------------- */

static int key_index(const rd_kafka_message_t *m) {
    if (!m->key || m->key_len < 2 || ((const char *)m->key)[0] != 'k')
        return -1;
    char buf[16];
    snprintf(buf, sizeof(buf), "%.*s", (int)m->key_len - 1, (const char *)m->key + 1);
    int k = atoi(buf); /* test-only parse of our own keys */
    return k >= 0 && k < EOS_MAX_KEYS ? k : -1;
}

static bool is_marker(const rd_kafka_message_t *m) {
    return m->key_len == 6 && memcmp(m->key, "marker", 6) == 0;
}

void eos_check_echo(const rd_kafka_message_t *m, void *opaque) {
    eos_verify *v = opaque;
    if (is_marker(m)) {
        v->markers_seen++;
        return;
    }
    int k = key_index(m);
    if (k < 0) {
        v->foreign++;
        return;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
    int64_t seq = strtoll(buf, NULL, 10);
    eos_key_check *kc = &v->keys[k];
    if (v->seen_counts[k] && seq >= 0 && seq < v->capacity[k])
        v->seen_counts[k][seq]++;
    if (seq == kc->next_echo)
        kc->next_echo++;
    else if (seq < kc->next_echo)
        kc->echo_dups++;
    else {
        kc->echo_gaps++;
        kc->next_echo = seq + 1;
    }
}

static void check_agg(const rd_kafka_message_t *m, void *opaque) {
    eos_verify *v = opaque;
    if (is_marker(m)) {
        v->markers_seen++;
        return;
    }
    int k = key_index(m);
    if (k < 0) {
        v->foreign++;
        return;
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
    int64_t count, sum, min;
    eos_key_check *kc = &v->keys[k];
    if (sscanf(buf, "%" SCNd64 ",%" SCNd64 ",%" SCNd64, &count, &sum, &min) != 3) {
        kc->agg_bad++;
        return;
    }
    /* Exactly-once: aggregate n+1 follows aggregate n, and it equals the
     * recomputation from the input 0..n. */
    int64_t expected_count = kc->next_count + 1;
    int64_t expected_sum = kc->sum + kc->next_count;
    if (count != expected_count || sum != expected_sum || min != 0)
        kc->agg_bad++;
    kc->next_count = count;
    kc->sum = sum;
}

/* Write a non-transactional marker to every output partition. A hanging
 * transaction would keep read_committed readers from ever seeing it. */
static void produce_markers(const eos_scenario *sc) {
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    const char *topics[] = {sc->echo, sc->agg};
    for (int t = 0; t < 2; t++)
        for (int p = 0; p < EOS_PARTITIONS; p++)
            assert_int_equal(
                rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topics[t]), RD_KAFKA_V_PARTITION(p),
                                  RD_KAFKA_V_KEY("marker", 6), RD_KAFKA_V_VALUE("m", 1),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                0);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);
}

void eos_verify_exactly_once(const eos_scenario *sc) {
    produce_markers(sc);
    eos_verify *v = calloc(1, sizeof(*v));
    assert_non_null(v);
    long echoed = test_scan_topic(test_kafka_bootstrap(), sc->echo, "read_committed",
                                  eos_check_echo, v, 120000);
    long aggregated =
        test_scan_topic(test_kafka_bootstrap(), sc->agg, "read_committed", check_agg, v, 120000);
    long gaps = 0, dups = 0, bad = 0, short_keys = 0;
    for (int k = 0; k < sc->n_keys; k++) {
        gaps += v->keys[k].echo_gaps;
        dups += v->keys[k].echo_dups;
        bad += v->keys[k].agg_bad;
        short_keys +=
            v->keys[k].next_echo != sc->per_key[k] || v->keys[k].next_count != sc->per_key[k];
    }
    printf("# verifier: %ld input (%ld not delivered), %ld echoed, %ld aggregates, %ld gaps, "
           "%ld duplicates, %ld wrong aggregates, %ld keys short, %ld/%d markers\n",
           sc->n_records, sc->failed_deliveries, echoed, aggregated, gaps, dups, bad, short_keys,
           v->markers_seen, 2 * EOS_PARTITIONS);
    assert_int_equal(sc->failed_deliveries, 0);
    assert_int_equal(gaps, 0);
    assert_int_equal(dups, 0);
    assert_int_equal(bad, 0);
    assert_int_equal(short_keys, 0);
    assert_int_equal(v->foreign, 0);
    assert_int_equal(v->markers_seen, 2 * EOS_PARTITIONS);
    assert_int_equal(echoed, sc->n_records + EOS_PARTITIONS);
    free(v);
}
