/* broker.c: the broker fixture of the integration tests (see broker.h). */
#include "tests/support/broker.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h> /* program_invocation_short_name */
#include <stdio.h>
#include <string.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

rd_kafka_t *test_admin;
char test_work_dir[64];

int test_broker_open(rd_kafka_t **admin) {
    *admin = NULL;
    const char *bootstrap = test_kafka_bootstrap();
    if (!bootstrap)
        return 0;
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &test_logger, errstr, sizeof(errstr));
    *admin = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (!*admin) {
        fprintf(stderr, "# admin client: %s\n", errstr);
        return -1;
    }
    return 0;
}

void test_broker_close(rd_kafka_t **admin) {
    if (*admin)
        rd_kafka_destroy(*admin);
    *admin = NULL;
}

int test_broker_setup(void **state) {
    (void)state;
    if (test_broker_open(&test_admin) != 0)
        return -1;
    if (!test_admin)
        return 0;
    /* /tmp/sluice-test_engine-XXXXXX for build/.../test_engine */
    char name[64];
    snprintf(name, sizeof(name), "sluice-%s", program_invocation_short_name);
    return test_work_dir_make(test_work_dir, sizeof(test_work_dir), name);
}

int test_broker_pg_setup(void **state) {
    return test_pg_dsn() ? test_broker_setup(state) : 0;
}

int test_broker_teardown(void **state) {
    (void)state;
    test_broker_close(&test_admin);
    test_work_dir_remove(test_work_dir);
    return 0;
}

void test_need_broker(void) {
    test_skip_unless(test_admin, TEST_NO_BROKER);
}

void test_skip_unless(bool available, const char *missing) {
    if (available)
        return;
    fprintf(stderr, "# %s not set: skipped\n", missing);
    skip();
}

void test_broker_create_topic(rd_kafka_t *admin, const char *name, int partitions,
                              int replication_factor, const char *const *configs) {
    char errstr[512];
    sl_topic_spec spec = {.name = name,
                          .partitions = partitions,
                          .replication_factor = replication_factor,
                          .configs = configs};
    if (sl_admin_ensure_topic(admin, &spec, 30000, errstr, sizeof(errstr)))
        fail_msg("create %s: %s", name, errstr);
}

rd_kafka_resp_err_t test_broker_produce(rd_kafka_t *producer, const char *topic, const char *key,
                                        const void *value, size_t len) {
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_producev(
                producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(producer, 10);
    if (err)
        fprintf(stderr, "# produce to %s: %s\n", topic, rd_kafka_err2str(err));
    return err;
}
