/* Unit tests: configuration table, validation, file and environment. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/base/config.h"
#include "processor/cmd/config_groups.h"

static char errstr[1024];

static int setup(void **state) {
    *state = sl_config_new(sl_config_groups, errstr, sizeof(errstr));
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    sl_config_destroy(*state);
    return 0;
}

static void defaults_come_from_the_table(void **state) {
    sl_config *config = *state;
    size_t n = sl_config_key_count(config);
    assert_true(n > 5);
    for (size_t i = 0; i < n; i++) {
        const char *owner;
        const sl_config_prop *prop = sl_config_key_at(config, i, &owner);
        assert_string_equal(sl_config_get(config, prop->name), prop->default_value);
        assert_true(strlen(prop->description) > 10);
        assert_true(strlen(owner) > 0);
    }
    assert_string_equal(sl_config_get(config, "application.id"), "sluice");
    assert_string_equal(sl_config_get(config, "bootstrap.servers"), "");
    assert_int_equal(sl_config_get_int(config, "http.port"), 8080);
    assert_null(sl_config_get(config, "no.such.key"));
}

static void integers_are_checked_against_bounds(void **state) {
    sl_config *config = *state;
    assert_int_equal(sl_config_set(config, "http.port", "9000", errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_get_int(config, "http.port"), 9000);
    assert_int_equal(sl_config_set(config, "http.port", "70000", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, "out of range"));
    assert_int_equal(sl_config_set(config, "http.port", "80x", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_int_equal(sl_config_set(config, "http.port", "", errstr, sizeof(errstr)), SL_ERR_CONFIG);
    assert_int_equal(
        sl_config_set(config, "http.port", "99999999999999999999", errstr, sizeof(errstr)),
        SL_ERR_CONFIG);
    assert_int_equal(sl_config_get_int(config, "http.port"), 9000); /* unchanged */
}

static void enums_accept_only_their_choices(void **state) {
    sl_config *config = *state;
    assert_int_equal(sl_config_set(config, "log.level", "debug", errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_set(config, "log.level", "verbose", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_string_equal(sl_config_get(config, "log.level"), "debug");
}

static void unknown_keys_are_an_error(void **state) {
    assert_int_equal(sl_config_set(*state, "htp.port", "1", errstr, sizeof(errstr)), SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, "htp.port"));
}

static void application_id_must_be_a_safe_name(void **state) {
    sl_config *config = *state;
    assert_int_equal(
        sl_config_set(config, "application.id", "orders-v2.prod_1", errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_set(config, "application.id", "../etc", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_int_equal(sl_config_set(config, "application.id", "", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_int_equal(sl_config_set(config, "application.id", "a b", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
}

static void kafka_keys_pass_through_and_engine_keys_are_refused(void **state) {
    sl_config *config = *state;
    assert_int_equal(
        sl_config_set(config, "kafka.message.max.bytes", "2000000", errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(
        sl_config_set(config, "kafka.message.max.bytes", "3000000", errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_kafka_count(config), 1);
    const char *key, *value;
    sl_config_kafka_at(config, 0, &key, &value);
    assert_string_equal(key, "message.max.bytes");
    assert_string_equal(value, "3000000");
    assert_int_equal(
        sl_config_set(config, "kafka.partitioner", "consistent", errstr, sizeof(errstr)),
        SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, "set by sluice"));
    assert_int_equal(sl_config_set(config, "kafka.", "x", errstr, sizeof(errstr)), SL_ERR_CONFIG);
    /* A producer./consumer. scope does not get around the engine's keys. */
    assert_int_equal(
        sl_config_set(config, "kafka.consumer.group.id", "other", errstr, sizeof(errstr)),
        SL_ERR_CONFIG);
    assert_int_equal(sl_config_set(config, "kafka.producer.", "x", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
}

static void kafka_pass_through_is_bounded(void **state) {
    sl_config *config = *state;
    char key[64];
    for (int i = 0; i < SL_CONFIG_MAX_KAFKA; i++) {
        snprintf(key, sizeof(key), "kafka.k%d", i);
        assert_int_equal(sl_config_set(config, key, "v", errstr, sizeof(errstr)), SL_OK);
    }
    assert_int_equal(sl_config_set(config, "kafka.one.more", "v", errstr, sizeof(errstr)),
                     SL_ERR_FULL);
}

static void overlong_values_are_refused(void **state) {
    char *big = malloc(SL_CONFIG_MAX_VALUE + 1);
    memset(big, 'a', SL_CONFIG_MAX_VALUE);
    big[SL_CONFIG_MAX_VALUE] = '\0';
    assert_int_equal(sl_config_set(*state, "state.dir", big, errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    free(big);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void file_sets_keys_and_skips_comments(void **state) {
    sl_config *config = *state;
    char path[] = "/tmp/sluice-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "# a comment\n\n  http.port = 9100  \napplication.id=orders\n"
                     "kafka.linger.ms = 7\n");
    assert_int_equal(sl_config_load_file(config, path, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_get_int(config, "http.port"), 9100);
    assert_string_equal(sl_config_get(config, "application.id"), "orders");
    assert_int_equal(sl_config_kafka_count(config), 1);
    unlink(path);
}

static void file_errors_name_the_line(void **state) {
    sl_config *config = *state;
    char path[] = "/tmp/sluice-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "http.port = 9100\nthis line has no equals\n");
    assert_int_equal(sl_config_load_file(config, path, errstr, sizeof(errstr)), SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, ":2:"));
    write_file(path, "\nhttp.threads = 65\n");
    assert_int_equal(sl_config_load_file(config, path, errstr, sizeof(errstr)), SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, ":2: http.threads"));
    unlink(path);
    assert_int_equal(sl_config_load_file(config, path, errstr, sizeof(errstr)), SL_ERR_IO);
}

static void environment_overrides_keys(void **state) {
    sl_config *config = *state;
    char *env[] = {"PATH=/bin",
                   "SLUICE_HTTP_PORT=9200",
                   "KAFKA_BOOTSTRAP=10.0.0.1:9092",
                   "SLUICE_KAFKA_LINGER_MS=3",
                   "SLUICE_CONFIG=/ignored",
                   "SLUICE_TEST_KAFKA_BOOTSTRAP=ignored",
                   NULL};
    assert_int_equal(sl_config_load_env(config, env, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_config_get_int(config, "http.port"), 9200);
    assert_string_equal(sl_config_get(config, "bootstrap.servers"), "10.0.0.1:9092");
    const char *key, *value;
    assert_int_equal(sl_config_kafka_count(config), 1);
    sl_config_kafka_at(config, 0, &key, &value);
    assert_string_equal(key, "linger.ms");
    assert_string_equal(value, "3");
}

static void environment_typos_are_an_error(void **state) {
    char *env[] = {"SLUICE_HTTP_PROT=9200", NULL};
    assert_int_equal(sl_config_load_env(*state, env, errstr, sizeof(errstr)), SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, "SLUICE_HTTP_PROT"));
    char *bad_value[] = {"SLUICE_HTTP_PORT=abc", NULL};
    assert_int_equal(sl_config_load_env(*state, bad_value, errstr, sizeof(errstr)), SL_ERR_CONFIG);
}

static void each_key_belongs_to_the_owner_that_reads_it(void **state) {
    sl_config *config = *state;
    const char *expected[][2] = {
        {"application.id", "processor/base"},
        {"bootstrap.servers", "processor/kafka"},
        {"commit.interval.ms", "processor/engine"},
        {"http.port", "processor/http"},
        {"gateway.reply.timeout.ms", "processor/gateway"},
        {"health.kafka.interval.ms", "processor/app"},
        {"identity.topic.prefix", "topology/identity"},
        {"dialogs.topic.partitions", "topology/dialogs"},
        {"identity.argon2.threads", "connectors/http/identity_routes"},
        {"dialogs.read.wait.ms", "connectors/http/dialogs_routes"},
        {"pg.dsn", "connectors/postgres"},
    };
    size_t found = 0;
    for (size_t i = 0; i < sl_config_key_count(config); i++) {
        const char *owner;
        const sl_config_prop *prop = sl_config_key_at(config, i, &owner);
        for (size_t e = 0; e < sizeof(expected) / sizeof(expected[0]); e++) {
            if (strcmp(prop->name, expected[e][0]) == 0) {
                assert_string_equal(owner, expected[e][1]);
                found++;
            }
        }
    }
    assert_int_equal(found, sizeof(expected) / sizeof(expected[0]));
    /* Base's keys come first, and each owner's keys are together (one
     * section each in --help and docs/CONFIGURATION.md). */
    const char *first;
    sl_config_key_at(config, 0, &first);
    assert_string_equal(first, "processor/base");
    size_t sections = 1;
    for (size_t i = 1; i < sl_config_key_count(config); i++) {
        const char *previous, *owner;
        sl_config_key_at(config, i - 1, &previous);
        sl_config_key_at(config, i, &owner);
        sections += strcmp(previous, owner) != 0;
    }
    size_t groups = 1;
    for (const sl_config_group *const *g = sl_config_groups; *g; g++)
        groups++;
    assert_int_equal(sections, groups);
}

static const sl_config_prop engine_keys[] = {
    {"poll.timeout.ms", SL_CONFIG_INT, "10", 1, 1000, NULL, "A test key of a fake engine."},
};
static const sl_config_prop sink_keys[] = {
    {"sink.rows", SL_CONFIG_INT, "5", 1, 10, NULL, "A test key of a fake sink."},
    {"poll.timeout.ms", SL_CONFIG_INT, "20", 1, 1000, NULL, "The engine's key again."},
};
static const sl_config_group engine_group = {"processor/engine", engine_keys, 1};
static const sl_config_group sink_group = {"connectors/postgres", sink_keys, 2};

static void two_owners_cannot_register_the_same_key(void **state) {
    (void)state;
    const sl_config_group *const clash[] = {&engine_group, &sink_group, NULL};
    errstr[0] = '\0';
    assert_null(sl_config_new(clash, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "'poll.timeout.ms' is registered by both processor/engine "
                                   "and connectors/postgres"));
    /* Nor may an owner take one of base's keys, or register one twice. */
    static const sl_config_prop state_dir_again[] = {
        {"state.dir", SL_CONFIG_STRING, "/tmp", 0, 0, NULL, "A second state.dir."},
    };
    const sl_config_group theft = {"processor/engine", state_dir_again, 1};
    const sl_config_group *const steal[] = {&theft, NULL};
    assert_null(sl_config_new(steal, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "'state.dir' is registered by both processor/base and "
                                   "processor/engine"));
    const sl_config_group *const twice[] = {&engine_group, &engine_group, NULL};
    assert_null(sl_config_new(twice, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "poll.timeout.ms"));
    /* kafka.* is librdkafka's namespace, not an owner's. */
    static const sl_config_prop kafka_key[] = {
        {"kafka.linger.ms", SL_CONFIG_INT, "5", 0, 100, NULL, "Not ours to register."},
    };
    const sl_config_group kafka = {"processor/kafka", kafka_key, 1};
    const sl_config_group *const pass_through[] = {&kafka, NULL};
    assert_null(sl_config_new(pass_through, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "kafka.linger.ms"));
}

static void only_registered_keys_are_known(void **state) {
    (void)state;
    const sl_config_group *const engine_only[] = {&engine_group, NULL};
    sl_config *config = sl_config_new(engine_only, errstr, sizeof(errstr));
    assert_non_null(config);
    assert_int_equal(sl_config_key_count(config), sl_config_base_keys.count + 1);
    assert_int_equal(sl_config_get_int(config, "poll.timeout.ms"), 10);
    assert_int_equal(sl_config_set(config, "poll.timeout.ms", "2000", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_int_equal(sl_config_set(config, "state.dir", "/var/x", errstr, sizeof(errstr)), SL_OK);
    /* The sink did not register: its key (and any typo) is refused. */
    assert_int_equal(sl_config_set(config, "sink.rows", "7", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    assert_non_null(strstr(errstr, "unknown configuration key 'sink.rows'"));
    assert_null(sl_config_get(config, "sink.rows"));
    char *env[] = {"SLUICE_SINK_ROWS=7", NULL};
    assert_int_equal(sl_config_load_env(config, env, errstr, sizeof(errstr)), SL_ERR_CONFIG);
    sl_config_destroy(config);
    /* Base alone: its keys only. */
    config = sl_config_new(NULL, errstr, sizeof(errstr));
    assert_non_null(config);
    assert_string_equal(sl_config_get(config, "application.id"), "sluice");
    assert_int_equal(sl_config_set(config, "http.port", "1", errstr, sizeof(errstr)),
                     SL_ERR_CONFIG);
    sl_config_destroy(config);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
int main(void) {
    const struct CMUnitTest tests[] = {
        T(defaults_come_from_the_table),
        T(integers_are_checked_against_bounds),
        T(enums_accept_only_their_choices),
        T(unknown_keys_are_an_error),
        T(application_id_must_be_a_safe_name),
        T(kafka_keys_pass_through_and_engine_keys_are_refused),
        T(kafka_pass_through_is_bounded),
        T(overlong_values_are_refused),
        T(file_sets_keys_and_skips_comments),
        T(file_errors_name_the_line),
        T(environment_overrides_keys),
        T(environment_typos_are_an_error),
        T(each_key_belongs_to_the_owner_that_reads_it),
        cmocka_unit_test(two_owners_cannot_register_the_same_key),
        cmocka_unit_test(only_registered_keys_are_known),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
