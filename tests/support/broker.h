/*
 * broker.h: the broker fixture of the integration tests. The harness gives
 * the broker it started in SLUICE_TEST_KAFKA_BOOTSTRAP; without it every
 * broker test skips (TAP "# SKIP"). A test file is one process, and its
 * fixture is process-wide: cmocka's group setup test_broker_setup opens one
 * admin handle (a plain producer used for admin requests) and makes a work
 * directory for the file's instances; test_broker_teardown closes and
 * removes them. Topics are created through the admin handle.
 *
 * Everything here runs on the test's thread.
 */
#ifndef SLUICE_TEST_BROKER_H
#define SLUICE_TEST_BROKER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

/* What the skip message names as missing. */
#define TEST_NO_BROKER       "SLUICE_TEST_KAFKA_BOOTSTRAP"
#define TEST_NO_BROKER_OR_PG "SLUICE_TEST_KAFKA_BOOTSTRAP / SLUICE_TEST_PG_DSN"
#define TEST_NO_PG           "SLUICE_TEST_PG_DSN"

/* The file's admin handle (NULL without a broker: the tests skip) and its
 * work directory ("" until made); set by the group setup. */
extern rd_kafka_t *test_admin;
extern char test_work_dir[64];

/* cmocka group setup: test_admin and test_work_dir. Returns 0 and sets
 * nothing without a broker; -1 if the admin handle or the directory
 * cannot be made. */
int test_broker_setup(void **state);

/* The same for files that need Postgres as well: nothing is set unless
 * both SLUICE_TEST_KAFKA_BOOTSTRAP and SLUICE_TEST_PG_DSN are. */
int test_broker_pg_setup(void **state);

/* cmocka group teardown: destroy test_admin and remove the work directory
 * (kept if SLUICE_TEST_KEEP is set). */
int test_broker_teardown(void **state);

/* Skip the running test unless the group setup found a broker. */
void test_need_broker(void);

/* Open an admin handle into *admin (the caller owns it; close it
 * with test_broker_close). Returns 0 with *admin NULL when there is no
 * broker (the tests skip), 0 with a handle, -1 when it cannot be made. */
int test_broker_open(rd_kafka_t **admin);

/* Destroy *admin if set and clear it. */
void test_broker_close(rd_kafka_t **admin);

/* Skip the running cmocka test, saying that `missing` is not set, unless
 * `available`. */
void test_skip_unless(bool available, const char *missing);

/* Create `name` (or find it) with `partitions` and `replication_factor`
 * (-1: the broker's default) and the given topic configs (NULL or
 * NULL-terminated key, value pairs). Fails the test on error. */
void test_broker_create_topic(rd_kafka_t *admin, const char *name, int partitions,
                              int replication_factor, const char *const *configs);

/* Produce one record (key and value copied) to `topic`, polling while the
 * producer's queue is full. Returns librdkafka's answer (NO_ERROR: queued)
 * and prints it when it is an error. No cmocka assertion: load threads
 * call it. */
rd_kafka_resp_err_t test_broker_produce(rd_kafka_t *producer, const char *topic, const char *key,
                                        const void *value, size_t len);

#endif
