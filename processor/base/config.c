/* config.c: the property table, validation, file and environment loading. */
#include "processor/base/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const guarantee_choices[] = {"exactly_once_v2", "at_least_once", NULL};
static const char *const log_level_choices[] = {"error", "warn", "info", "debug", NULL};
static const char *const key_alg_choices[] = {"RS256", "ES256", NULL};

/* The one table. Keep it sorted by topic, not alphabetically: it is also the
 * order of `sluice --help` and docs/CONFIGURATION.md. */
static const sl_config_prop props[] = {
    {"application.id", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "Names the consumer group, the transactional id prefix, the changelog "
     "topics (`<application.id>-<store>-changelog`) and the state directory. "
     "Letters, digits, '.', '_' and '-' only."},
    {"bootstrap.servers", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Kafka brokers (host:port,...). Empty: start the embedded in-process "
     "broker (librdkafka's mock cluster: no compaction, no real transactions; "
     "for trying sluice out, never for production). Env: KAFKA_BOOTSTRAP."},
    {"embedded.brokers", SL_CONFIG_INT, "1", 1, 5, NULL,
     "Number of brokers of the embedded mock cluster (only when "
     "bootstrap.servers is empty)."},
    {"state.dir", SL_CONFIG_STRING, "./data", 0, 0, NULL,
     "Directory for local state: `<state.dir>/<application.id>/<task>/<store>`. "
     "Locked by one instance at a time."},
    {"processing.guarantee", SL_CONFIG_ENUM, "exactly_once_v2", 0, 0, guarantee_choices,
     "exactly_once_v2: store changelogs, outputs and consumed offsets commit in one Kafka "
     "transaction, and RocksDB is updated only after it commits. at_least_once: flush, then "
     "commit offsets; a crash replays records, so handlers must be idempotent."},
    {"commit.interval.ms", SL_CONFIG_INT, "100", 1, 600000, NULL,
     "How often the open transaction (or the at-least-once offsets) is committed. Shorter: "
     "lower end-to-end latency for read_committed readers; longer: higher throughput."},
    {"poll.batch.records", SL_CONFIG_INT, "1000", 1, 1000000, NULL,
     "Records processed per loop iteration before restore, punctuation and commit get a "
     "turn."},
    {"restore.batch.records", SL_CONFIG_INT, "10000", 1, 10000000, NULL,
     "Changelog records applied per RocksDB write batch (WAL off) and per loop iteration "
     "while restoring; the consumer group is polled between batches."},
    {"store.pending.max.bytes", SL_CONFIG_INT, "67108864", 1024, 1099511627776LL, NULL,
     "Bound on the uncommitted store writes the instance holds in memory (the record cache "
     "of every task's stores: the latest value per key, applied to RocksDB after the "
     "commit). Past it the engine commits early, after the current record."},
    {"rocksdb.block.cache.bytes", SL_CONFIG_INT, "67108864", 1048576, 1099511627776LL, NULL,
     "Block cache shared by every store of the instance; memtables are charged to it too."},
    {"rocksdb.write.buffer.bytes", SL_CONFIG_INT, "33554432", 1048576, 1099511627776LL, NULL,
     "Upper bound of all memtables of all stores of the instance together."},
    {"topic.replication.factor", SL_CONFIG_INT, "-1", -1, 32767, NULL,
     "Replication factor of the topics sluice creates (changelogs, dead-letter topic); -1 "
     "uses the broker's default.replication.factor."},
    {"http.host", SL_CONFIG_STRING, "127.0.0.1", 0, 0, NULL,
     "Numeric IPv4 or IPv6 address the HTTP server (API, /healthz, /readyz) binds to."},
    {"http.port", SL_CONFIG_INT, "8080", 0, 65535, NULL,
     "TCP port of the HTTP server; 0 picks a free port (logged at start)."},
    {"http.threads", SL_CONFIG_INT, "0", 0, 64, NULL,
     "0: a thread per HTTP connection (a request that waits for a password hash or a "
     "command's outcome blocks only its own connection); n > 0: a pool of n threads "
     "multiplexing connections (only for deployments whose routes never wait)."},
    {"http.max.connections", SL_CONFIG_INT, "1024", 1, 65536, NULL,
     "Concurrent HTTP connections; more are refused."},
    {"http.connection.timeout.s", SL_CONFIG_INT, "30", 1, 3600, NULL,
     "Idle HTTP connections (and slow clients) are closed after this many "
     "seconds."},
    {"gateway.advertised.address", SL_CONFIG_STRING, "", 0, 0, NULL,
     "host:port other instances use to forward HTTP requests to this one (written to "
     "`<application.id>-members`). Empty: http.host and the bound HTTP port (set it when "
     "http.host is 0.0.0.0 or behind NAT)."},
    {"gateway.members.interval.ms", SL_CONFIG_INT, "2000", 100, 600000, NULL,
     "How often an instance republishes its membership record (it also publishes at once "
     "on every assignment change)."},
    {"gateway.members.expiry.ms", SL_CONFIG_INT, "10000", 500, 3600000, NULL,
     "A membership record not refreshed for this long is ignored for routing (a crashed "
     "instance); a clean shutdown removes its record at once."},
    {"gateway.forward.timeout.ms", SL_CONFIG_INT, "5000", 100, 600000, NULL,
     "Deadline for forwarding a request to the instance that owns its key (connect, send and "
     "answer); past it the client gets 503 with Retry-After."},
    {"gateway.forward.max.bytes", SL_CONFIG_INT, "1048576", 1024, 268435456, NULL,
     "Largest forwarded answer (headers and body) relayed; a larger one is a 502."},
    {"gateway.reply.max.waiters", SL_CONFIG_INT, "1024", 1, 1000000, NULL,
     "HTTP requests that may wait for a command's reply at once; more get 503 with "
     "Retry-After."},
    {"gateway.reply.timeout.ms", SL_CONFIG_INT, "5000", 100, 600000, NULL,
     "How long an HTTP request waits for its command's reply before answering 503 with "
     "Retry-After (the command is not lost: it was produced)."},
    {"health.kafka.interval.ms", SL_CONFIG_INT, "2000", 100, 600000, NULL,
     "How often the instance checks that the Kafka cluster answers; /readyz "
     "reports not ready while it does not."},
    {"pg.dsn", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Postgres sink (`sluice sink`): libpq connection string or URI of the database it writes "
     "to. Env: SLUICE_PG_DSN. Never logged (it may hold a password)."},
    {"pg.sink.group.id", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Consumer group of the Postgres sink; empty: `<application.id>-pgsink`. Its position is "
     "the offsets stored in Postgres (`sluice_sink_offsets`), not the group's committed offsets."},
    {"pg.sink.users.topic", SL_CONFIG_STRING, "users.events", 0, 0, NULL,
     "Topic of UsersEvent records that the sink materializes into the `users` table."},
    {"pg.sink.messages.topic", SL_CONFIG_STRING, "dialogs.events", 0, 0, NULL,
     "Topic of DialogsEvent records that the sink materializes into the `messages` table."},
    {"pg.sink.batch.rows", SL_CONFIG_INT, "5000", 1, 1000000, NULL,
     "Records per Postgres transaction (COPY into a staging table, then one upsert)."},
    {"pg.sink.linger.ms", SL_CONFIG_INT, "200", 0, 600000, NULL,
     "A batch that is not full is written at the latest this long after its first record."},
    {"pg.sink.retry.backoff.ms", SL_CONFIG_INT, "200", 10, 600000, NULL,
     "First delay before reconnecting to Postgres; doubles per failure."},
    {"pg.sink.retry.backoff.max.ms", SL_CONFIG_INT, "5000", 10, 3600000, NULL,
     "Longest delay between two attempts to reach Postgres."},
    {"log.level", SL_CONFIG_ENUM, "info", 0, 0, log_level_choices, "Lowest level that is logged."},
    {"cache.max.bytes", SL_CONFIG_INT, "10485760", 1024, 1099511627776LL, NULL,
     "Memory of the record cache (coalescing emits, sl_ctx_emit_coalesced): the latest "
     "record per cache key is kept and produced once per commit; a full cache is flushed "
     "early, inside the same transaction."},
    {"reply.partitions", SL_CONFIG_INT, "4", 1, 4096, NULL,
     "Partitions of `<application.id>-replies`, the topic command outcomes are answered on "
     "(created if missing when the topology sends replies). Replies are keyed by the "
     "waiting gateway's reply_key."},
    {"identity.topic.prefix", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Prefix of the identity topics (`<prefix>users.commands`, `users.events`, "
     "`tokens.commands`, `tokens.revoked`). Empty in production; tests set a unique one. "
     "Letters, digits, '.', '_' and '-' only."},
    {"identity.topic.partitions", SL_CONFIG_INT, "4", 1, 4096, NULL,
     "Partitions of the identity topics sluice creates if missing (users.commands, "
     "users.events, tokens.commands, tokens.revoked); an existing topic with another count "
     "is a startup error."},
    {"identity.idempotency.ttl.ms", SL_CONFIG_INT, "86400000", 1000, 2592000000LL, NULL,
     "How long a users command id is remembered: a repeated id within this time is answered "
     "with the original outcome and changes nothing."},
    {"identity.idempotency.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that forgets expired command ids."},
    {"identity.revocation.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that removes revocations of expired tokens "
     "(a tombstone on tokens.revoked, then the store entry)."},
    {"identity.revocation.grace.ms", SL_CONFIG_INT, "60000", 0, 86400000, NULL,
     "How long after a revoked token's expiry its revocation is kept, for clock skew between "
     "sluice and the services that verify tokens."},
    {"identity.key.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "PEM file of the private key that signs tokens (RSA 2048+ for RS256, EC P-256 for ES256); "
     "every instance needs the same one. Empty: generated on first start as "
     "<state.dir>/<application.id>/token-signing-key.pem (one instance only)."},
    {"identity.key.previous.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "PEM file of the previous signing key (public or private) during a key rotation: tokens "
     "it signed are still accepted, so nobody is logged out. Empty: none."},
    {"identity.key.alg", SL_CONFIG_ENUM, "RS256", 0, 0, key_alg_choices,
     "Algorithm of a generated signing key (a configured key's type decides otherwise). RS256 "
     "verifies about 3x faster than ES256."},
    {"identity.token.issuer", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "iss of issued tokens, and the only issuer accepted."},
    {"identity.token.audience", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "aud of issued tokens, and the only audience accepted."},
    {"identity.token.access.ttl.s", SL_CONFIG_INT, "900", 60, 86400, NULL,
     "Lifetime of access tokens, seconds."},
    {"identity.token.refresh.ttl.s", SL_CONFIG_INT, "1209600", 300, 31536000, NULL,
     "Lifetime of refresh tokens, seconds (each refresh rotates the token)."},
    {"identity.token.leeway.s", SL_CONFIG_INT, "30", 0, 300, NULL,
     "Clock skew tolerated when checking exp, nbf and iat, seconds."},
    {"identity.token.cache.entries", SL_CONFIG_INT, "65536", 16, 16777216, NULL,
     "Verified tokens remembered (bounded; the blacklist is still checked every time)."},
    {"identity.argon2.threads", SL_CONFIG_INT, "2", 1, 64, NULL,
     "Threads hashing and verifying passwords (argon2id); at most this many hashes run at "
     "once, each with identity.argon2.memory.kib of memory."},
    {"identity.argon2.queue", SL_CONFIG_INT, "256", 1, 65536, NULL,
     "Password jobs that may wait for a thread; beyond, requests get 503 + Retry-After."},
    {"identity.argon2.timeout.ms", SL_CONFIG_INT, "10000", 100, 120000, NULL,
     "Longest a request waits for its password job (queue + hash)."},
    {"identity.argon2.memory.kib", SL_CONFIG_INT, "19456", 19456, 262144, NULL,
     "argon2id memory per hash, KiB (OWASP minimum 19456)."},
    {"identity.throttle.ip.burst", SL_CONFIG_INT, "20", 1, 10000, NULL,
     "Registration and login attempts one client address may make at once (then one per "
     "identity.throttle.ip.refill.ms; 429 beyond). 20 failed logins in 15 minutes lock the "
     "address for 1 minute, doubling up to 15."},
    {"identity.throttle.ip.refill.ms", SL_CONFIG_INT, "3000", 1, 86400000, NULL,
     "One more attempt per client address every this many milliseconds."},
    {"identity.throttle.account.burst", SL_CONFIG_INT, "5", 1, 10000, NULL,
     "Login attempts on one account at once (then one per "
     "identity.throttle.account.refill.ms). 5 failed logins in 15 minutes lock the account "
     "for 1 minute, doubling up to 15."},
    {"identity.throttle.account.refill.ms", SL_CONFIG_INT, "12000", 1, 86400000, NULL,
     "One more login attempt per account every this many milliseconds."},
    {"identity.argon2.passes", SL_CONFIG_INT, "2", 2, 10, NULL, "argon2id passes (t)."},
    {"identity.argon2.parallelism", SL_CONFIG_INT, "1", 1, 4, NULL, "argon2id lanes (p)."},
    {"dialogs.topic.prefix", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Prefix of the dialogs topics (`<prefix>dialogs.commands`, `dialogs.events`, "
     "`dialogs.users`). Empty in production; tests set a unique one."},
    {"dialogs.topic.partitions", SL_CONFIG_INT, "8", 1, 4096, NULL,
     "Partitions of the dialogs topics sluice creates if missing and of the dialogs-by-user "
     "repartition topic: the number of message shards. An existing topic with another count "
     "is a startup error (see ARCHITECTURE.md, resharding)."},
    {"dialogs.idempotency.ttl.ms", SL_CONFIG_INT, "86400000", 1000, 2592000000LL, NULL,
     "How long a SendMessage command id is remembered: a repeated id within this time gets "
     "the original outcome and stores nothing."},
    {"dialogs.idempotency.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that forgets expired dialogs command ids."},
    {"dialogs.list.limit.max", SL_CONFIG_INT, "100", 1, 10000, NULL,
     "Largest `limit` of GET /dialog/{user_id}/list and GET /dialogs (also the default); a "
     "larger one is capped."},
    {"dialogs.read.wait.ms", SL_CONFIG_INT, "2000", 0, 60000, NULL,
     "Longest a list waits for read-your-writes: for the owner's commit in flight to be "
     "applied, and for `after=<sequence>` to be stored (then 503 + Retry-After)."},
    {"http.max.connections.per.address", SL_CONFIG_INT, "64", 0, 65536, NULL,
     "Concurrent HTTP connections from one client address (more are closed at once, so "
     "one address cannot hold every connection open: slowloris); 0: no per-address cap."},
};
#define N_PROPS (sizeof(props) / sizeof(props[0]))

/* kafka.* keys the engine sets itself: letting a user override them would
 * break a fixed decision (DESIGN.md 3 and 6) or the consumer group. */
static const char *const engine_owned_kafka_keys[] = {
    "bootstrap.servers", "partitioner", "transactional.id", "group.id", "enable.auto.commit",
    "isolation.level",   NULL};

struct sl_config {
    char *values[N_PROPS];
    size_t n_kafka;
    char *kafka_keys[SL_CONFIG_MAX_KAFKA];
    char *kafka_values[SL_CONFIG_MAX_KAFKA];
};

const sl_config_prop *sl_config_props(size_t *count) {
    *count = N_PROPS;
    return props;
}

static int prop_index(const char *key) {
    for (size_t i = 0; i < N_PROPS; i++)
        if (strcmp(props[i].name, key) == 0)
            return (int)i;
    return -1;
}

sl_config *sl_config_new(void) {
    sl_config *config = calloc(1, sizeof(*config));
    if (!config)
        return NULL;
    for (size_t i = 0; i < N_PROPS; i++) {
        config->values[i] = strdup(props[i].default_value);
        if (!config->values[i]) {
            sl_config_destroy(config);
            return NULL;
        }
    }
    return config;
}

void sl_config_destroy(sl_config *config) {
    if (!config)
        return;
    for (size_t i = 0; i < N_PROPS; i++)
        free(config->values[i]);
    for (size_t i = 0; i < config->n_kafka; i++) {
        free(config->kafka_keys[i]);
        free(config->kafka_values[i]);
    }
    free(config);
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
    int i = prop_index(key);
    if (i < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "unknown configuration key '%s'", key);
    sl_err err = validate(&props[i], value, errstr, errstr_size);
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
            if (strncmp(key, "kafka.", 6) != 0 && prop_index(key) < 0)
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
    int i = prop_index(key);
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
