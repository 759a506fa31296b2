/*
 * config.h: sluice configuration, driven by declarative tables: one per
 * owner, each in the room of the module that reads its keys.
 *
 * Every owner declares its keys in a sl_config_group (processor/engine/
 * config_keys.c, topology/identity/config_keys.c, ...); base's own keys
 * (application.id, state.dir, log.level) are sl_config_base_keys here. The
 * full list is assembled where every room may be seen (processor/cmd/
 * config_groups.c) and passed to sl_config_new, so this file names no room
 * above base. A key registered by two owners is an error at start.
 *
 * Sources, later ones win: the table's defaults, a key = value file, the
 * environment (SLUICE_<KEY> with dots as underscores, e.g.
 * SLUICE_STATE_DIR; KAFKA_BOOTSTRAP for bootstrap.servers; SLUICE_KAFKA_<X>
 * for kafka.<x>), then explicit sl_config_set calls (command-line --set).
 * Any key starting with "kafka." passes straight through to librdkafka,
 * except the few the engine owns (see sl_config_set).
 *
 * The same tables drive parsing, validation (types, bounds, choices),
 * `sluice --help` and docs/CONFIGURATION.md (a section per owner).
 *
 * A config is not thread-safe for writing; once loaded it is read-only and
 * may be read from any thread.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>

#include "processor/base/error.h"

typedef enum sl_config_type {
    SL_CONFIG_STRING,
    SL_CONFIG_INT,
    SL_CONFIG_ENUM,
} sl_config_type;

typedef struct sl_config_prop {
    const char *name;
    sl_config_type type;
    const char *default_value;
    long long min, max;         /* SL_CONFIG_INT only, inclusive */
    const char *const *choices; /* SL_CONFIG_ENUM only, NULL-terminated */
    const char *description;
} sl_config_prop;

/* The keys one owner reads: a static, read-only table. owner names the
 * module or room ("processor/engine"); it heads the owner's section of
 * `sluice --help` and docs/CONFIGURATION.md. */
typedef struct sl_config_group {
    const char *owner;
    const sl_config_prop *props;
    size_t count;
} sl_config_group;

typedef struct sl_config sl_config;

/* Limits: "full" is an ordinary error, never an unbounded allocation. */
#define SL_CONFIG_MAX_VALUE 4096      /* bytes in one value */
#define SL_CONFIG_MAX_KAFKA 256       /* kafka.* pass-through entries */
#define SL_CONFIG_MAX_FILE  (1 << 20) /* bytes in a config file */
#define SL_CONFIG_MAX_KEYS  1024      /* keys of all groups together */

/* The keys of processor/base itself; sl_config_new always registers them
 * first. */
extern const sl_config_group sl_config_base_keys;

/* A config holding the defaults of base's keys and of every group in groups
 * (a NULL-terminated array, borrowed: the groups must outlive the config;
 * NULL means base's keys only). Keys are kept in registration order: base,
 * then the groups in the order given. Returns NULL with errstr set if two
 * owners register the same key, a group registers a kafka.* key, there are
 * more than SL_CONFIG_MAX_KEYS keys, or memory runs out. The caller owns the
 * config and frees it with sl_config_destroy. */
sl_config *sl_config_new(const sl_config_group *const *groups, char *errstr, size_t errstr_size);
void sl_config_destroy(sl_config *config);

/* Number of registered keys, and key i (0-based, registration order) with
 * *owner set to its group's owner; both borrowed from the groups. */
size_t sl_config_key_count(const sl_config *config);
const sl_config_prop *sl_config_key_at(const sl_config *config, size_t i, const char **owner);

/* Set one key, validating it against the table (or as a kafka.* key).
 * The value is copied. On error, config is unchanged and errstr says why. */
sl_err sl_config_set(sl_config *config, const char *key, const char *value, char *errstr,
                     size_t errstr_size);

/* Read a key = value file ('#' starts a comment line). Errors name the line.
 * Keys set before the failing line stay set. */
sl_err sl_config_load_file(sl_config *config, const char *path, char *errstr, size_t errstr_size);

/* Apply overrides from an environment block (NULL-terminated "K=V" array,
 * typically `environ`). Unknown SLUICE_* variables are an error, so a typo
 * does not silently fall back to a default. */
sl_err sl_config_load_env(sl_config *config, char *const *envp, char *errstr, size_t errstr_size);

/* Current value of a registered key, borrowed from config (valid until the
 * key is set again or config is destroyed). NULL if no group registered it. */
const char *sl_config_get(const sl_config *config, const char *key);

/* Integer value of an SL_CONFIG_INT key (already validated on set). */
long long sl_config_get_int(const sl_config *config, const char *key);

/* Number of kafka.* pass-through entries, and entry i (0-based) with the
 * "kafka." prefix stripped; both strings borrowed from config. */
size_t sl_config_kafka_count(const sl_config *config);
void sl_config_kafka_at(const sl_config *config, size_t i, const char **key, const char **value);

#endif
