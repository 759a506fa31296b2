/*
 * fuzz_config.c: the configuration loaders on untrusted text.
 *
 * Each input is read twice: as a key = value file (sl_config_load_file, from
 * an in-memory file) and, line by line, as an environment block
 * (sl_config_load_env). Whatever either accepts, the config must hold only
 * values that sl_config_set accepts again unchanged: no loader may smuggle
 * past the table's validation.
 */
#include <string.h>

#include "processor/base/config.h"
#include "processor/cmd/config_groups.h"
#include "tests/fuzz/fuzz.h"

/* More lines than this are not passed to sl_config_load_env: the loader is
 * linear in them and longer blocks add no new paths. */
#define MAX_ENV_ENTRIES 64

static void check_values_are_valid(sl_config *config) {
    char errstr[512];
    for (size_t i = 0; i < sl_config_key_count(config); i++) {
        const char *name = sl_config_key_at(config, i, NULL)->name;
        const char *value = sl_config_get(config, name);
        FUZZ_CHECK(value != NULL);
        char *copy = strdup(value);
        FUZZ_CHECK(copy != NULL);
        FUZZ_CHECK(sl_config_set(config, name, copy, errstr, sizeof(errstr)) == SL_OK);
        FUZZ_CHECK(strcmp(sl_config_get(config, name), copy) == 0);
        free(copy);
    }
    size_t n_kafka = sl_config_kafka_count(config);
    FUZZ_CHECK(n_kafka <= SL_CONFIG_MAX_KAFKA);
    for (size_t i = 0; i < n_kafka; i++) {
        const char *key, *value;
        sl_config_kafka_at(config, i, &key, &value);
        FUZZ_CHECK(key[0] != '\0');
        FUZZ_CHECK(strlen(value) < SL_CONFIG_MAX_VALUE);
    }
}

static void load_as_file(const uint8_t *data, size_t size) {
    char path[64], errstr[512];
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    FUZZ_CHECK(fd >= 0);
    sl_config *config = sl_config_new(sl_config_groups, NULL, 0);
    FUZZ_CHECK(config != NULL);
    sl_err err = sl_config_load_file(config, path, errstr, sizeof(errstr));
    FUZZ_CHECK(err == SL_OK || errstr[0] != '\0');
    check_values_are_valid(config);
    sl_config_destroy(config);
    close(fd);
}

static void load_as_environment(const uint8_t *data, size_t size) {
    /* One NUL-terminated "NAME=value" string per line. */
    char *block = malloc(size + 1);
    FUZZ_CHECK(block != NULL);
    memcpy(block, data, size);
    block[size] = '\0';
    char *envp[MAX_ENV_ENTRIES + 1];
    size_t n = 0;
    for (char *line = block; line && n < MAX_ENV_ENTRIES;) {
        envp[n++] = line;
        char *newline = strchr(line, '\n');
        if (newline)
            *newline = '\0';
        line = newline ? newline + 1 : NULL;
    }
    envp[n] = NULL;
    char errstr[512];
    sl_config *config = sl_config_new(sl_config_groups, NULL, 0);
    FUZZ_CHECK(config != NULL);
    sl_err err = sl_config_load_env(config, envp, errstr, sizeof(errstr));
    FUZZ_CHECK(err == SL_OK || errstr[0] != '\0');
    check_values_are_valid(config);
    sl_config_destroy(config);
    free(block);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_as_file(data, size);
    load_as_environment(data, size);
    return 0;
}
