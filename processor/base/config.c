/* config.c: the configuration mechanism (registration of each owner's keys,
 * validation, file and environment loading) and the keys of base itself. */
#include "processor/base/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const log_level_choices[] = {"error", "warn", "info", "debug", NULL};

/* Base's own keys: the ones every room reads (application.id, state.dir) and
 * the log's. The other keys live with the module that reads them, each in its
 * room's config_keys.c; their order in --help and docs/CONFIGURATION.md is
 * base, then the order of the groups given to sl_config_new. */
static const sl_config_prop base_props[] = {
    {"application.id", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "Names the consumer group, the transactional id prefix, the changelog "
     "topics (`<application.id>-<store>-changelog`) and the state directory. "
     "Letters, digits, '.', '_' and '-' only."},
    {"state.dir", SL_CONFIG_STRING, "./data", 0, 0, NULL,
     "Directory for local state: `<state.dir>/<application.id>/<task>/<store>`. "
     "Locked by one instance at a time."},
    {"log.level", SL_CONFIG_ENUM, "info", 0, 0, log_level_choices, "Lowest level that is logged."},
};

const sl_config_group sl_config_base_keys = {"processor/base", base_props,
                                             sizeof(base_props) / sizeof(base_props[0])};

/* kafka.* keys the engine sets itself: letting a user override them would
 * break a fixed decision (DESIGN.md 3 and 6) or the consumer group. */
static const char *const engine_owned_kafka_keys[] = {
    "bootstrap.servers", "partitioner", "transactional.id", "group.id", "enable.auto.commit",
    "isolation.level",   NULL};

/* One registered key: its table entry (borrowed from a static group) and
 * the owner that registered it. */
typedef struct config_key {
    const sl_config_prop *prop;
    const char *owner;
} config_key;

struct sl_config {
    size_t n_keys;
    config_key *keys; /* n_keys, registration order */
    char **values;    /* n_keys, owned */
    size_t n_kafka;
    char *kafka_keys[SL_CONFIG_MAX_KAFKA];
    char *kafka_values[SL_CONFIG_MAX_KAFKA];
};

static int prop_index(const sl_config *config, const char *key) {
    for (size_t i = 0; i < config->n_keys; i++)
        if (strcmp(config->keys[i].prop->name, key) == 0)
            return (int)i;
    return -1;
}

/* Append one group's keys to config->keys, refusing a key that another
 * owner (or the same one) registered already. */
static sl_err register_group(sl_config *config, const sl_config_group *group, char *errstr,
                             size_t errstr_size) {
    for (size_t j = 0; j < group->count; j++) {
        const sl_config_prop *prop = &group->props[j];
        if (strncmp(prop->name, "kafka.", 6) == 0)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "configuration key '%s' (%s): kafka.* keys pass through to "
                           "librdkafka and cannot be registered",
                           prop->name, group->owner);
        int other = prop_index(config, prop->name);
        if (other >= 0)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "configuration key '%s' is registered by both %s and %s", prop->name,
                           config->keys[other].owner, group->owner);
        if (config->n_keys == SL_CONFIG_MAX_KEYS)
            return sl_fail(errstr, errstr_size, SL_ERR_FULL, "more than %d configuration keys",
                           SL_CONFIG_MAX_KEYS);
        config->keys[config->n_keys++] = (config_key){prop, group->owner};
    }
    return SL_OK;
}

sl_config *sl_config_new(const sl_config_group *const *groups, char *errstr, size_t errstr_size) {
    sl_config *config = calloc(1, sizeof(*config));
    config_key *keys = calloc(SL_CONFIG_MAX_KEYS, sizeof(*keys));
    if (!config || !keys) {
        free(config);
        free(keys);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    config->keys = keys;
    sl_err err = register_group(config, &sl_config_base_keys, errstr, errstr_size);
    for (size_t g = 0; !err && groups && groups[g]; g++)
        err = register_group(config, groups[g], errstr, errstr_size);
    if (!err) {
        config->values = calloc(config->n_keys ? config->n_keys : 1, sizeof(*config->values));
        if (!config->values)
            err = sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; !err && i < config->n_keys; i++) {
        config->values[i] = strdup(config->keys[i].prop->default_value);
        if (!config->values[i])
            err = sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    }
    if (err) {
        sl_config_destroy(config);
        return NULL;
    }
    return config;
}

void sl_config_destroy(sl_config *config) {
    if (!config)
        return;
    for (size_t i = 0; config->values && i < config->n_keys; i++)
        free(config->values[i]);
    free(config->values);
    free(config->keys);
    for (size_t i = 0; i < config->n_kafka; i++) {
        free(config->kafka_keys[i]);
        free(config->kafka_values[i]);
    }
    free(config);
}

size_t sl_config_key_count(const sl_config *config) {
    return config->n_keys;
}

const sl_config_prop *sl_config_key_at(const sl_config *config, size_t i, const char **owner) {
    if (owner)
        *owner = config->keys[i].owner;
    return config->keys[i].prop;
}

static bool parse_ll(const char *s, long long *out) {
    if (!*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static sl_err validate(const sl_config_prop *prop, const char *value, char *errstr,
                       size_t errstr_size) {
    switch (prop->type) {
    case SL_CONFIG_INT: {
        long long v;
        if (!parse_ll(value, &v))
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: '%s' is not an integer",
                           prop->name, value);
        if (v < prop->min || v > prop->max)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s: %lld is out of range [%lld, %lld]", prop->name, v, prop->min,
                           prop->max);
        return SL_OK;
    }
    case SL_CONFIG_ENUM:
        for (const char *const *c = prop->choices; *c; c++)
            if (strcmp(*c, value) == 0)
                return SL_OK;
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                       "%s: '%s' is not one of the allowed values", prop->name, value);
    case SL_CONFIG_STRING:
        break;
    }
    if (strcmp(prop->name, "application.id") == 0) {
        size_t n = strlen(value);
        if (n == 0 || n > 200)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "application.id must be 1..200 characters");
        for (const char *p = value; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
                return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                               "application.id may hold only letters, digits, '.', '_' and '-'");
    }
    if (strcmp(prop->name, "state.dir") == 0 && value[0] == '\0')
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir must not be empty");
    return SL_OK;
}

static sl_err set_kafka(sl_config *config, const char *key, const char *value, char *errstr,
                        size_t errstr_size) {
    if (!*key)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "empty kafka.* key");
    const char *property = key; /* without a producer./consumer. scope */
    if (strncmp(property, "producer.", 9) == 0 || strncmp(property, "consumer.", 9) == 0)
        property += 9;
    if (!*property)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "empty kafka.* key");
    for (const char *const *owned = engine_owned_kafka_keys; *owned; owned++)
        if (strcmp(*owned, property) == 0)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "kafka.%s is set by sluice itself and cannot be overridden", key);
    for (size_t i = 0; i < config->n_kafka; i++) {
        if (strcmp(config->kafka_keys[i], key) == 0) {
            char *copy = strdup(value);
            if (!copy)
                return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
            free(config->kafka_values[i]);
            config->kafka_values[i] = copy;
            return SL_OK;
        }
    }
    if (config->n_kafka == SL_CONFIG_MAX_KAFKA)
        return sl_fail(errstr, errstr_size, SL_ERR_FULL, "more than %d kafka.* settings",
                       SL_CONFIG_MAX_KAFKA);
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    }
    config->kafka_keys[config->n_kafka] = k;
    config->kafka_values[config->n_kafka] = v;
    config->n_kafka++;
    return SL_OK;
}

sl_err sl_config_set(sl_config *config, const char *key, const char *value, char *errstr,
                     size_t errstr_size) {
    if (!config || !key || !value)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL argument");
    if (strlen(value) >= SL_CONFIG_MAX_VALUE)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: value longer than %d bytes", key,
                       SL_CONFIG_MAX_VALUE - 1);
    if (strncmp(key, "kafka.", 6) == 0)
        return set_kafka(config, key + 6, value, errstr, errstr_size);
    int i = prop_index(config, key);
    if (i < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "unknown configuration key '%s'", key);
    sl_err err = validate(config->keys[i].prop, value, errstr, errstr_size);
    if (err)
        return err;
    char *copy = strdup(value);
    if (!copy)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    free(config->values[i]);
    config->values[i] = copy;
    return SL_OK;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

sl_err sl_config_load_file(sl_config *config, const char *path, char *errstr, size_t errstr_size) {
    FILE *file = fopen(path, "r");
    if (!file)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot open config file %s: %s", path,
                       strerror(errno));
    char line[SL_CONFIG_MAX_VALUE + 256];
    size_t lineno = 0, total = 0;
    sl_err err = SL_OK;
    while (fgets(line, sizeof(line), file)) {
        lineno++;
        size_t len = strlen(line);
        total += len;
        if (total > SL_CONFIG_MAX_FILE) {
            err = sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: larger than %d bytes", path,
                          SL_CONFIG_MAX_FILE);
            break;
        }
        if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(file)) {
            err =
                sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s:%zu: line too long", path, lineno);
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            err = sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s:%zu: expected 'key = value'",
                          path, lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        char why[512];
        err = sl_config_set(config, key, value, why, sizeof(why));
        if (err) {
            sl_fail(errstr, errstr_size, err, "%s:%zu: %s", path, lineno, why);
            break;
        }
    }
    if (!err && ferror(file))
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "%s: read error", path);
    fclose(file);
    return err;
}

/* SLUICE_HTTP_PORT -> http.port; SLUICE_KAFKA_MESSAGE_MAX_BYTES ->
 * kafka.message.max.bytes. Writes into out (bounded). */
static bool env_to_key(const char *name, size_t name_len, char *out, size_t out_size) {
    if (name_len >= out_size)
        return false;
    for (size_t i = 0; i < name_len; i++)
        out[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
    out[name_len] = '\0';
    return true;
}

sl_err sl_config_load_env(sl_config *config, char *const *envp, char *errstr, size_t errstr_size) {
    if (!envp)
        return SL_OK;
    for (char *const *e = envp; *e; e++) {
        const char *entry = *e, *eq = strchr(entry, '=');
        if (!eq)
            continue;
        size_t name_len = (size_t)(eq - entry);
        const char *value = eq + 1;
        char key[256], why[512];
        sl_err err = SL_OK;
        if (name_len == 15 && strncmp(entry, "KAFKA_BOOTSTRAP", 15) == 0) {
            err = sl_config_set(config, "bootstrap.servers", value, why, sizeof(why));
        } else if (name_len > 7 && strncmp(entry, "SLUICE_", 7) == 0) {
            const char *name = entry + 7;
            size_t len = name_len - 7;
            /* SLUICE_CONFIG names the file itself; SLUICE_TEST_* belong to the
             * test harness. Neither is a setting. */
            if ((len == 6 && strncmp(name, "CONFIG", 6) == 0) || strncmp(name, "TEST_", 5) == 0)
                continue;
            if (!env_to_key(name, len, key, sizeof(key)))
                return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                               "environment variable name too long");
            if (strncmp(key, "kafka.", 6) != 0 && prop_index(config, key) < 0)
                return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                               "environment: SLUICE_%.*s names no configuration key", (int)len,
                               name);
            err = sl_config_set(config, key, value, why, sizeof(why));
        } else {
            continue;
        }
        if (err)
            return sl_fail(errstr, errstr_size, err, "environment: %s", why);
    }
    return SL_OK;
}

const char *sl_config_get(const sl_config *config, const char *key) {
    int i = prop_index(config, key);
    return i < 0 ? NULL : config->values[i];
}

long long sl_config_get_int(const sl_config *config, const char *key) {
    const char *value = sl_config_get(config, key);
    long long v = 0;
    if (!value || !parse_ll(value, &v))
        return 0;
    return v;
}

size_t sl_config_kafka_count(const sl_config *config) {
    return config->n_kafka;
}

void sl_config_kafka_at(const sl_config *config, size_t i, const char **key, const char **value) {
    *key = config->kafka_keys[i];
    *value = config->kafka_values[i];
}
