/*
 * counter: the engine's system-test application, modelled on Kafka Streams'
 * EOS test. Input records are keyed ("k17") with a decimal sequence number
 * as value. For each record it
 *   - echoes it unchanged to the echo topic, and
 *   - updates the per-key aggregate (count, sum, min) in the store "agg" and
 *     emits the new aggregate ("count,sum,min") to the agg topic.
 * A value that is not a decimal number is a poison record: the source's
 * validator sends it to the dead-letter topic. A record with a "reject"
 * header is rejected by the processor itself (sl_ctx_reject), with the
 * header's value as the reason.
 *
 * usage: counter --input T --echo T --agg T [--set KEY=VALUE]...
 *                [--crash-after N] [--global T] [--tick-ms N] [--stream-tick-ms N]
 * --crash-after N raises SIGKILL after N records (inside an open
 * transaction), a test hook for crash recovery.
 * --global T adds a global store "settings" filled from topic T; an input
 * record with key "g:<name>" then emits "global:<value of name>" (or
 * "global:-") to the agg topic instead of being counted.
 * --groups T re-keys every counted record to group "g<n mod 4>" through the
 * repartition topic "regroup", counts records per group in the store
 * "groups" (a second sub-topology) and emits "<group>" -> "<count>" to T.
 * --tick-ms N / --stream-tick-ms N add a wall-clock / stream-time
 * punctuator that emits key "tick" / "stream-tick" with value
 * "<partition>:<time>" to the echo topic. Configuration also comes
 * from SLUICE_* environment variables, as for sluice itself.
 *
 * HTTP: GET /agg/{key} answers the key's aggregate from the store "agg"
 * through the gateway (read here, or forwarded to the owner):
 * {"key", "count", "sum", "min"}, 404 for a key never seen, 503 with
 * Retry-After while the owning task restores. GET /agg/{key}/scan?skip=N&limit=M
 * lists, in key order, the keys of the store partition that owns {key}
 * (a range query): {"keys": [...]}.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/cmd/config_groups.h"
#include "processor/gateway/gateway.h"
#include "processor/app.h"
#include "processor/topology.h"

extern char **environ;

static volatile sig_atomic_t stop_requested;
static long long crash_after = -1;
static long long processed;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void stderr_log(void *opaque, sl_log_level level, const char *component, const char *line) {
    fprintf(stderr, "[counter %s] %s %s: %s\n", (const char *)opaque, sl_log_level_name(level),
            component, line);
}

static bool parse_i64(const void *data, size_t len, int64_t *out) {
    char buf[32];
    if (!data || len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, data, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool validate(const sl_record *record, char *reason, size_t reason_size, void *opaque) {
    (void)opaque;
    int64_t v;
    if (!record->key || record->key_len == 0) {
        snprintf(reason, reason_size, "record has no key");
        return false;
    }
    if (!parse_i64(record->value, record->value_len, &v)) {
        snprintf(reason, reason_size, "value is not a decimal sequence number");
        return false;
    }
    return true;
}

static sl_err lookup_global(sl_ctx *ctx, const sl_record *record) {
    char *value = NULL;
    size_t value_len = 0;
    sl_err err = sl_ctx_global_get(ctx, "settings", (const char *)record->key + 2,
                                   record->key_len - 2, &value, &value_len);
    if (err && err != SL_ERR_NOT_FOUND)
        return err;
    char out[300];
    int out_len =
        snprintf(out, sizeof(out), "global:%.*s", err ? 1 : (int)value_len, err ? "-" : value);
    free(value);
    return sl_ctx_emit(ctx, "agg", record->key, record->key_len, out, (size_t)out_len,
                       record->partition);
}

static bool regroup;

/* Second sub-topology: count per group, from the repartition topic. */
static sl_err count_group(sl_ctx *ctx, const sl_record *record, void *opaque) {
    (void)opaque;
    int64_t n = 0;
    char *old = NULL;
    size_t old_len = 0;
    sl_err err = sl_ctx_get(ctx, "groups", record->key, record->key_len, &old, &old_len);
    if (err == SL_OK) {
        parse_i64(old, old_len, &n);
        free(old);
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    char value[32];
    int len = snprintf(value, sizeof(value), "%" PRId64, n + 1);
    if ((err = sl_ctx_put(ctx, "groups", record->key, record->key_len, value, (size_t)len)))
        return err;
    return sl_ctx_emit(ctx, "groups-out", record->key, record->key_len, value, (size_t)len, -1);
}

static sl_err tick(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    const char *key = opaque;
    char value[64];
    int len = snprintf(value, sizeof(value), "%d:%lld", sl_ctx_partition(ctx), (long long)now_ms);
    return sl_ctx_emit(ctx, "echo", key, strlen(key), value, (size_t)len, sl_ctx_partition(ctx));
}

static sl_err count(sl_ctx *ctx, const sl_record *record, void *opaque) {
    (void)opaque;
    const void *reason;
    size_t reason_len;
    if (sl_record_header(record, "reject", &reason, &reason_len)) {
        /* explicit rejection by a processor, reason taken from the header */
        char buf[64];
        snprintf(buf, sizeof(buf), "%.*s", reason ? (int)reason_len : 0,
                 reason ? (const char *)reason : "");
        sl_ctx_reject(ctx, buf);
        return SL_OK;
    }
    if (record->key_len > 2 && memcmp(record->key, "g:", 2) == 0)
        return lookup_global(ctx, record);
    int64_t value = 0, n = 0, sum = 0, min = 0;
    parse_i64(record->value, record->value_len, &value); /* validated */
    char *old = NULL;
    size_t old_len = 0;
    sl_err err = sl_ctx_get(ctx, "agg", record->key, record->key_len, &old, &old_len);
    if (err == SL_OK) {
        char buf[96];
        snprintf(buf, sizeof(buf), "%.*s", (int)old_len, old);
        free(old);
        if (sscanf(buf, "%" SCNd64 ",%" SCNd64 ",%" SCNd64, &n, &sum, &min) != 3)
            return SL_ERR_INVALID;
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    min = n == 0 || value < min ? value : min;
    n++;
    sum += value;
    char agg[96];
    int agg_len = snprintf(agg, sizeof(agg), "%" PRId64 ",%" PRId64 ",%" PRId64, n, sum, min);
    if (regroup) {
        char group[8];
        int group_len = snprintf(group, sizeof(group), "g%d", (int)(value % 4));
        if ((err = sl_ctx_emit(ctx, "regroup", group, (size_t)group_len, record->value,
                               record->value_len, -1)))
            return err;
    }
    if ((err = sl_ctx_emit(ctx, "echo", record->key, record->key_len, record->value,
                           record->value_len, record->partition)) ||
        (err = sl_ctx_put(ctx, "agg", record->key, record->key_len, agg, (size_t)agg_len)) ||
        (err = sl_ctx_emit(ctx, "agg", record->key, record->key_len, agg, (size_t)agg_len,
                           record->partition)))
        return err;
    if (crash_after >= 0 && ++processed >= crash_after)
        raise(SIGKILL);
    return SL_OK;
}

static void get_agg(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *gateway = opaque;
    const char *key = sl_http_request_param(req, "key");
    char *value = NULL;
    size_t value_len = 0;
    switch (sl_gateway_get(gateway, req, resp, "agg", key, strlen(key), &value, &value_len)) {
    case SL_GATEWAY_ANSWERED:
        return;
    case SL_GATEWAY_MISSING:
        sl_gateway_error(gateway, req, resp, 404, "no such key", 0);
        return;
    case SL_GATEWAY_LOCAL:
        break;
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "%.*s", (int)(value_len < sizeof(buf) ? value_len : 0), value);
    free(value);
    int64_t n, sum, min;
    char json[256];
    if (sscanf(buf, "%" SCNd64 ",%" SCNd64 ",%" SCNd64, &n, &sum, &min) != 3 ||
        snprintf(json, sizeof(json),
                 "{\"key\":\"%.64s\",\"count\":%" PRId64 ",\"sum\":%" PRId64 ",\"min\":%" PRId64
                 "}",
                 strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789-_:") == strlen(key) ? key : "?",
                 n, sum, min) >= (int)sizeof(json)) {
        sl_gateway_error(gateway, req, resp, 500, "malformed aggregate", 0);
        return;
    }
    sl_http_respond_json(resp, 200, json);
}

typedef struct scan {
    char out[4096];
    size_t len;
} scan;

static bool scan_visit(void *opaque, const void *key, size_t key_len, const void *value,
                       size_t value_len) {
    (void)value;
    (void)value_len;
    scan *sc = opaque;
    int n = snprintf(sc->out + sc->len, sizeof(sc->out) - sc->len, "%s\"%.*s\"",
                     sc->len > 9 ? "," : "", key_len < 64 ? (int)key_len : 0, (const char *)key);
    if (n < 0 || (size_t)n >= sizeof(sc->out) - sc->len - 2)
        return false;
    sc->len += (size_t)n;
    return true;
}

static void scan_agg(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *gateway = opaque;
    const char *key = sl_http_request_param(req, "key");
    const char *skip = sl_http_request_query(req, "skip");
    const char *limit = sl_http_request_query(req, "limit");
    sl_query_range range = {.skip = skip ? strtoul(skip, NULL, 10) : 0,
                            .limit = limit ? strtoul(limit, NULL, 10) : 100};
    if (range.limit > 100)
        range.limit = 100;
    scan sc = {.len = 0};
    sc.len = (size_t)snprintf(sc.out, sizeof(sc.out), "{\"keys\":[");
    if (sl_gateway_range(gateway, req, resp, "agg", key, strlen(key), &range, scan_visit, &sc) !=
        SL_GATEWAY_LOCAL)
        return;
    snprintf(sc.out + sc.len, sizeof(sc.out) - sc.len, "]}");
    sl_http_respond_json(resp, 200, sc.out);
}

static sl_err add_routes(void *opaque, sl_http_server *http, sl_gateway *gateway) {
    (void)opaque;
    sl_err err = sl_http_route(http, "GET", "/agg/{key}", get_agg, gateway);
    return err ? err : sl_http_route(http, "GET", "/agg/{key}/scan", scan_agg, gateway);
}

int main(int argc, char **argv) {
    const char *input = NULL, *echo = NULL, *agg = NULL, *global = NULL, *groups = NULL;
    long long tick_ms = 0, stream_tick_ms = 0;
    char errstr[1024];
    sl_config *config = sl_config_new(sl_config_groups, NULL, 0);
    sl_err err = sl_config_load_env(config, environ, errstr, sizeof(errstr));
    for (int i = 1; !err && i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--input") == 0)
            input = argv[i + 1];
        else if (strcmp(argv[i], "--echo") == 0)
            echo = argv[i + 1];
        else if (strcmp(argv[i], "--agg") == 0)
            agg = argv[i + 1];
        else if (strcmp(argv[i], "--crash-after") == 0)
            crash_after = strtoll(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--global") == 0)
            global = argv[i + 1];
        else if (strcmp(argv[i], "--groups") == 0)
            groups = argv[i + 1];
        else if (strcmp(argv[i], "--tick-ms") == 0)
            tick_ms = strtoll(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--stream-tick-ms") == 0)
            stream_tick_ms = strtoll(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--set") == 0) {
            char key[256];
            const char *eq = strchr(argv[i + 1], '=');
            if (!eq || (size_t)(eq - argv[i + 1]) >= sizeof(key)) {
                fprintf(stderr, "counter: --set expects KEY=VALUE\n");
                return 2;
            }
            snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i + 1]), argv[i + 1]);
            err = sl_config_set(config, key, eq + 1, errstr, sizeof(errstr));
        } else {
            fprintf(stderr, "counter: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (err || !input || !echo || !agg) {
        fprintf(stderr, "counter: %s\n", err ? errstr : "--input, --echo and --agg are required");
        return 2;
    }
    regroup = groups != NULL;
    sl_topology *topology = sl_topology_new();
    if (sl_topology_add_source(topology, "data", input, validate, NULL) ||
        sl_topology_add_store(topology, "agg", "data") ||
        sl_topology_add_processor(topology, "count", "data", count, NULL) ||
        sl_topology_add_sink(topology, "echo", echo) ||
        sl_topology_add_sink(topology, "agg", agg) ||
        (global && sl_topology_add_global_store(topology, "settings", global)) ||
        (groups &&
         (sl_topology_add_repartition(topology, "regroup", 0) ||
          sl_topology_add_store(topology, "groups", "regroup") ||
          sl_topology_add_processor(topology, "count-group", "regroup", count_group, NULL) ||
          sl_topology_add_sink(topology, "groups-out", groups))) ||
        (tick_ms > 0 && sl_topology_add_punctuator(topology, "tick", SL_PUNCTUATE_WALL_CLOCK,
                                                   tick_ms, tick, "tick")) ||
        (stream_tick_ms > 0 &&
         sl_topology_add_punctuator(topology, "stream-tick", SL_PUNCTUATE_STREAM_TIME,
                                    stream_tick_ms, tick, "stream-tick"))) {
        fprintf(stderr, "counter: invalid topology\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char tag[64];
    snprintf(tag, sizeof(tag), "%d", (int)getpid());
    sl_logger logger = {.fn = stderr_log, .opaque = tag, .level = SL_LOG_INFO};
    sl_log_level_parse(sl_config_get(config, "log.level"), &logger.level);
    sl_app *app =
        sl_app_new_with_routes(config, &logger, topology, add_routes, NULL, errstr, sizeof(errstr));
    if (!app) {
        fprintf(stderr, "counter: %s\n", errstr);
        return 1;
    }
    err = sl_app_run(app, &stop_requested);
    sl_app_destroy(app);
    sl_topology_destroy(topology);
    sl_config_destroy(config);
    return err ? 1 : 0;
}
