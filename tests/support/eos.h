/*
 * eos.h: the exactly-once system-test kit shared by the engine tests
 * (test_engine.c, test_broker_bounce.c), modelled on Kafka Streams'
 * EosTestDriver: a scenario (input, echo and aggregate topics of the
 * counter application, tests/apps/counter.c), a driver that produces keyed,
 * sequence-numbered records and remembers how many per key, and the
 * read_committed verifier.
 *
 * Everything here fails the running cmocka test on error; it runs on the
 * test's thread except eos_drive, which is a pthread entry point.
 */
#ifndef SLUICE_TEST_EOS_H
#define SLUICE_TEST_EOS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "tests/support/instance.h"

#define EOS_PARTITIONS 4
#define EOS_MAX_KEYS   64

typedef struct eos_scenario {
    char app_id[96];
    char input[128], echo[128], agg[128], dlq[160];
    int n_keys;
    long n_records;                /* set by eos_drive when it is done */
    long failed_deliveries;        /* input records the broker never took */
    int64_t per_key[EOS_MAX_KEYS]; /* records produced per key */
} eos_scenario;

/* Name a fresh scenario after `name` (unique per call) and create its three
 * topics with EOS_PARTITIONS partitions through `admin` (borrowed). */
void eos_scenario_init(rd_kafka_t *admin, eos_scenario *sc, const char *name, int n_keys);

/* Prepare a counter instance of the scenario in `work_dir` under the given
 * processing.guarantee (NULL: the default); `extra` is NULL or more counter arguments,
 * NULL-terminated (copied). Session timeout 6 s, so fail-over is quick. */
void eos_instance_init(test_instance *inst, const eos_scenario *sc, const char *work_dir,
                       const char *name, const char *guarantee, const char *const *extra);

typedef struct eos_driver {
    eos_scenario *sc;
    long from, to; /* record numbers to produce */
    int pace_per_ms;
    const char *poison_value; /* produce one poison record in the middle */
} eos_driver;

/* Produce records from..to (key k<i mod n_keys>, value the key's next
 * sequence number) with an idempotent producer, flush, and record the count
 * and any failed delivery in the scenario. `arg` is an eos_driver. */
void *eos_drive(void *arg);

/* True once the group's committed offsets reach the end of every input
 * partition. */
bool eos_wait_consumed(const eos_scenario *sc, int timeout_ms);

/* What the verifier saw per key. */
typedef struct eos_key_check {
    int64_t next_echo;  /* next expected sequence number */
    int64_t next_count; /* next expected aggregate count */
    int64_t sum;        /* expected sum so far */
    long echo_gaps, echo_dups, agg_bad;
} eos_key_check;

typedef struct eos_verify {
    eos_key_check keys[EOS_MAX_KEYS];
    long markers_seen;
    long foreign;                       /* records that are neither k<N> nor markers */
    int64_t *seen_counts[EOS_MAX_KEYS]; /* at-least-once: occurrences per seq (optional) */
    int64_t capacity[EOS_MAX_KEYS];
} eos_verify;

/* test_scan_topic visitor for the echo topic; `opaque` is an eos_verify. */
void eos_check_echo(const rd_kafka_message_t *m, void *opaque);

/* Exactly-once verification: a non-transactional marker is written to every
 * output partition, then every input must be echoed exactly once in order
 * per key, every aggregate must equal the recomputation from the input, no
 * input delivery may have failed, and every marker must be readable with
 * read_committed (a hanging transaction would hide it). */
void eos_verify_exactly_once(const eos_scenario *sc);

#endif
