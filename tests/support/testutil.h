/*
 * testutil.h: helpers shared by sluice's tests (cmocka).
 *
 * Integration tests find the broker and Postgres the harness started in
 * SLUICE_TEST_KAFKA_BOOTSTRAP and SLUICE_TEST_PG_DSN; without them they skip.
 */
#ifndef SLUICE_TESTUTIL_H
#define SLUICE_TESTUTIL_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "connectors/http/auth/jwt.h"
#include "processor/base/log.h"
#include "tests/support/http_client.h" /* test_http, for the tests that used it from here */

/* A logger that writes warnings and errors to stderr (tests are quiet). */
extern const sl_logger test_logger;

/* Key -> partition as computed by the Java client (kafka-clients 3.9.2:
 * Utils.toPositive(Utils.murmur2(key)) % partitions), for 3, 6, 12 and 32
 * partitions. */
typedef struct test_java_vector {
    const char *key;
    int p3, p6, p12, p32;
} test_java_vector;
extern const test_java_vector test_java_vectors[];
extern const size_t test_n_java_vectors;

/* Environment lookups; NULL when unset or empty. */
const char *test_kafka_bootstrap(void);
const char *test_pg_dsn(void);

/* A name unique to this process and call ("prefix-<pid>-<n>-<time>"). */
void test_unique_name(char *buf, size_t size, const char *prefix);

/* Monotonic milliseconds. */
int64_t test_now_ms(void);

/* A producer made by sl_kafka_conf_new (so: murmur2_random), idempotent;
 * transactional when transactional_id is non-NULL (init_transactions done).
 * Fails the test on error. */
rd_kafka_t *test_producer(const char *bootstrap, const char *transactional_id);

/* One consumed record, copied. */
typedef struct test_record {
    int32_t partition;
    int64_t offset;
    char key[128];
    char value[256];
} test_record;

/* Visit every record of every partition of `topic` from the beginning up to
 * its current end as seen with `isolation` ("read_committed" or
 * "read_uncommitted"), in offset order per partition. Returns the number of
 * records visited, or -1 on error or if the deadline passes first. */
typedef void test_visit_fn(const rd_kafka_message_t *message, void *opaque);
long test_scan_topic(const char *bootstrap, const char *topic, const char *isolation,
                     test_visit_fn *visit, void *opaque, int timeout_ms);

/* Read every partition of `topic` from the beginning up to its current end
 * (as seen with `isolation`: "read_committed" or "read_uncommitted") and
 * store at most `max` records in `out`. Returns the number read, or -1 on
 * error or if the deadline passes first. */
int test_read_topic(const char *bootstrap, const char *topic, const char *isolation,
                    test_record *out, int max, int timeout_ms);

/* The transaction check shared by the real-broker test and the mock
 * demonstration: in a fresh topic, commit a transaction with "committed-1",
 * abort one with "aborted", commit one with "committed-2", then read the
 * topic with read_committed. Returns how many "aborted" records a
 * read_committed reader sees (0 is correct Kafka behaviour), -1 on error;
 * *committed_seen receives the number of committed records seen. */
int test_aborted_records_visible(const char *bootstrap, int *committed_seen);

/* An RS256 signing key generated into <dir>/<name>.pem (its path copied
 * into `path`) and loaded; the caller owns the keys (sl_jwt_keys_destroy).
 * NULL, after printing why, on error. */
sl_jwt_keys *test_jwt_keys_new(const char *dir, const char *name, char *path, size_t path_size);

#endif
