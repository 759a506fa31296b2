/*
 * app.c: the instance: state-dir lock, Kafka connection, health endpoints.
 *
 * Readiness today means "the Kafka cluster answers a metadata request"; the
 * engine (tasks restored, global stores bootstrapped) adds its conditions to
 * the same flag. The loop probes Kafka every health.kafka.interval.ms and
 * logs only when the state changes, so an outage is one line, not a flood.
 */
#include "processor/app.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "processor/gateway/gateway.h"
#include "processor/http/client.h"
#include "processor/http/server.h"
#include "processor/kafka/client.h"
#include "processor/base/clock.h"
#include "processor/base/metrics.h"
#include "processor/http/metrics.h"
#include "processor/base/version.h"

struct sl_app {
    const sl_config *config;
    sl_logger logger;
    sl_embedded_cluster *embedded;
    char *bootstrap;
    rd_kafka_t *rk; /* producer handle used for cluster health */
    const sl_topology *topology;
    sl_engine *engine;
    sl_metrics *metrics;
    sl_http_server *http;  /* the public API, /healthz, /readyz */
    sl_http_server *admin; /* /metrics, the gateway's internals (admin.http.*) */
    sl_gateway *gateway;   /* with a topology only */
    sl_app_routes_fn *routes;
    void *routes_opaque;
    int lock_fd;
    char state_path[PATH_MAX];
    int64_t started_ms; /* sl_clock_mono_ms */
    atomic_bool kafka_reachable;
    atomic_int kafka_brokers;
};

static double seconds_since(int64_t t0_ms) {
    return (double)(sl_clock_mono_ms() - t0_ms) / 1000.0;
}

static sl_err mkdir_p(const char *path, char *errstr, size_t errstr_size) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", buf,
                           strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", buf,
                       strerror(errno));
    return SL_OK;
}

/* One instance per state directory: two writers on one RocksDB store, or two
 * checkpoint writers, would corrupt state. flock is released by the kernel
 * if the process dies, so a kill -9 never leaves a stale lock. */
static sl_err lock_state_dir(sl_app *app, char *errstr, size_t errstr_size) {
    const char *dir = sl_config_get(app->config, "state.dir");
    const char *app_id = sl_config_get(app->config, "application.id");
    if (snprintf(app->state_path, sizeof(app->state_path), "%s/%s", dir, app_id) >=
        (int)sizeof(app->state_path))
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
    sl_err err = mkdir_p(app->state_path, errstr, errstr_size);
    if (err)
        return err;
    char lock_path[PATH_MAX];
    if (snprintf(lock_path, sizeof(lock_path), "%s/.lock", app->state_path) >=
        (int)sizeof(lock_path))
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
    app->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (app->lock_fd < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot open %s: %s", lock_path,
                       strerror(errno));
    if (flock(app->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return sl_fail(errstr, errstr_size, SL_ERR_BUSY,
                       "state directory %s is in use by another sluice instance", app->state_path);
    return SL_OK;
}

static void respond_json_object(sl_http_response *resp, int status, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(obj);
    if (!text || sl_http_respond_json(resp, status, text))
        sl_http_respond_error(resp, 500, "out of memory");
    free(text);
}

static void healthz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    sl_app *app = opaque;
    respond_json_object(resp, 200,
                        json_pack("{s:s, s:s, s:f}", "status", "ok", "version", SLUICE_VERSION,
                                  "uptime_s", seconds_since(app->started_ms)));
}

static void readyz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    sl_app *app = opaque;
    bool reachable = atomic_load(&app->kafka_reachable);
    bool engine_ready = !app->engine || sl_engine_ready(app->engine);
    sl_engine_stats stats = {0};
    if (app->engine)
        sl_engine_stats_get(app->engine, &stats);
    bool ready = reachable && engine_ready;
    respond_json_object(
        resp, ready ? 200 : 503,
        json_pack("{s:s, s:{s:b, s:i, s:b}, s:{s:b, s:I, s:I, s:I, s:I, s:I, s:I}}", "status",
                  ready ? "ready" : "not_ready", "kafka", "reachable", reachable, "brokers",
                  atomic_load(&app->kafka_brokers), "embedded", app->embedded != NULL, "engine",
                  "ready", engine_ready, "tasks_assigned", (json_int_t)stats.tasks_assigned,
                  "tasks_running", (json_int_t)stats.tasks_running, "restored_records",
                  (json_int_t)stats.restored_records, "records_in", (json_int_t)stats.records_in,
                  "records_dlq", (json_int_t)stats.records_dlq, "commits",
                  (json_int_t)stats.commits));
    if (!ready)
        sl_http_response_retry_after(resp, 1);
}

/* The registered routes of one listener: [{"method", "path"}, ...]. */
static json_t *routes_json(const sl_http_server *server) {
    json_t *list = json_array();
    const char *method, *pattern;
    for (size_t i = 0; list && sl_http_server_route_at(server, i, &method, &pattern); i++)
        if (json_array_append_new(list,
                                  json_pack("{s:s, s:s}", "method", method, "path", pattern))) {
            json_decref(list);
            return NULL;
        }
    return list;
}

/* GET /v1/routes (admin listener): every route of both listeners, so a
 * test (or an operator) can hold them against schemas/openapi.yaml. Both
 * servers have started by the time this runs, so their routes are fixed. */
static void list_routes(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    sl_app *app = opaque;
    respond_json_object(resp, 200,
                        json_pack("{s:o, s:o}", "public", routes_json(app->http), "admin",
                                  routes_json(app->admin)));
}

static sl_err start_kafka(sl_app *app, char *errstr, size_t errstr_size) {
    const char *bootstrap = sl_config_get(app->config, "bootstrap.servers");
    if (bootstrap[0] == '\0') {
        int brokers = (int)sl_config_get_int(app->config, "embedded.brokers");
        app->embedded = sl_embedded_cluster_new(brokers, &app->logger, errstr, errstr_size);
        if (!app->embedded)
            return SL_ERR_KAFKA;
        bootstrap = sl_embedded_cluster_bootstraps(app->embedded);
        sl_log(&app->logger, SL_LOG_WARN, "kafka",
               "EMBEDDED BROKER (librdkafka mock cluster, %d broker%s) at %s: no compaction, "
               "no real transactions, ~100k records per partition; for trying sluice out only, "
               "set bootstrap.servers or KAFKA_BOOTSTRAP for a real cluster",
               brokers, brokers == 1 ? "" : "s", bootstrap);
    } else {
        sl_log(&app->logger, SL_LOG_INFO, "kafka", "using Kafka cluster at %s", bootstrap);
    }
    app->bootstrap = strdup(bootstrap);
    if (!app->bootstrap)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_PRODUCER, app->bootstrap, app->config,
                                              &app->logger, errstr, errstr_size);
    if (!conf)
        return SL_ERR_CONFIG;
    char why[512];
    app->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!app->rk) {
        rd_kafka_conf_destroy(conf);
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create Kafka client: %s", why);
    }
    return SL_OK;
}

/* The server and the health routes; started by start_http once every
 * route is registered (libmicrohttpd routes are fixed at start). */
static sl_err create_http(sl_app *app, char *errstr, size_t errstr_size) {
    sl_http_options options = {
        .host = sl_config_get(app->config, "http.host"),
        .port = (int)sl_config_get_int(app->config, "http.port"),
        .threads = (int)sl_config_get_int(app->config, "http.threads"),
        .max_connections = (int)sl_config_get_int(app->config, "http.max.connections"),
        .connection_timeout_s = (int)sl_config_get_int(app->config, "http.connection.timeout.s"),
        .header_timeout_s = (int)sl_config_get_int(app->config, "http.header.timeout.s"),
        .body_timeout_s = (int)sl_config_get_int(app->config, "http.body.timeout.s"),
        .max_connections_per_address =
            (int)sl_config_get_int(app->config, "http.max.connections.per.address"),
        .max_body_bytes = 1024 * 1024,
    };
    app->http = sl_http_server_new(&options, &app->logger, errstr, errstr_size);
    if (!app->http)
        return SL_ERR_HTTP;
    /* The admin listener: few clients (operators, a scraper), a thread
     * each, a small cap. */
    sl_http_options admin = {
        .host = sl_config_get(app->config, "admin.http.host"),
        .port = (int)sl_config_get_int(app->config, "admin.http.port"),
        .max_connections = 64,
        .connection_timeout_s = options.connection_timeout_s,
        .header_timeout_s = options.header_timeout_s,
        .body_timeout_s = options.body_timeout_s,
        .max_connections_per_address = 16,
        .max_body_bytes = 64 * 1024,
    };
    app->admin = sl_http_server_new(&admin, &app->logger, errstr, errstr_size);
    if (!app->admin)
        return SL_ERR_HTTP;
    sl_err err;
    if ((err = sl_http_route(app->http, "GET", "/healthz", healthz, app)) ||
        (err = sl_http_route(app->http, "GET", "/readyz", readyz, app)) ||
        (err = sl_http_route(app->admin, "GET", "/healthz", healthz, app)) ||
        (err = sl_http_route(app->admin, "GET", "/readyz", readyz, app)) ||
        (err = sl_http_route(app->admin, "GET", "/v1/routes", list_routes, app)) ||
        (err = sl_http_route(app->admin, "GET", "/metrics", sl_metrics_http_handler, app->metrics)))
        return sl_fail(errstr, errstr_size, err, "cannot register routes: %s", sl_err_msg(err));
    return SL_OK;
}

static sl_err start_http(sl_app *app, char *errstr, size_t errstr_size) {
    sl_err err = sl_http_server_start(app->http, errstr, errstr_size);
    if (!err)
        err = sl_http_server_start(app->admin, errstr, errstr_size);
    if (err)
        return err;
    sl_log(&app->logger, SL_LOG_INFO, "http", "listening on http://%s:%d (admin: http://%s:%d)",
           sl_config_get(app->config, "http.host"), sl_http_server_port(app->http),
           sl_config_get(app->config, "admin.http.host"), sl_http_server_port(app->admin));
    return SL_OK;
}

/* With a topology: the gateway, its generic routes and the app's routes
 * (before the HTTP server starts). */
static sl_err create_gateway(sl_app *app, char *errstr, size_t errstr_size) {
    if (!app->engine)
        return SL_OK;
    app->gateway =
        sl_gateway_new(app->config, app->engine, app->bootstrap, &app->logger, errstr, errstr_size);
    if (!app->gateway)
        return SL_ERR_CONFIG;
    sl_gateway_set_metrics(app->gateway, app->metrics);
    sl_err err = sl_gateway_routes(app->gateway, app->http, app->admin);
    if (!err && app->routes)
        err = app->routes(app->routes_opaque, app->http, app->gateway);
    if (err)
        return sl_fail(errstr, errstr_size, err, "cannot register routes: %s", sl_err_msg(err));
    return SL_OK;
}

static sl_err start_engine(sl_app *app, char *errstr, size_t errstr_size) {
    if (!app->topology)
        return SL_OK;
    app->engine = sl_engine_new(app->config, app->topology, app->bootstrap, &app->logger, errstr,
                                errstr_size);
    if (!app->engine)
        return SL_ERR_INVALID;
    sl_engine_set_metrics(app->engine, app->metrics);
    if (app->embedded)
        sl_engine_use_embedded_cluster(app->engine, app->embedded);
    return sl_engine_start(app->engine, errstr, errstr_size);
}

sl_app *sl_app_new(const sl_config *config, const sl_logger *logger, const sl_topology *topology,
                   char *errstr, size_t errstr_size) {
    return sl_app_new_with_routes(config, logger, topology, NULL, NULL, errstr, errstr_size);
}

sl_app *sl_app_new_with_routes(const sl_config *config, const sl_logger *logger,
                               const sl_topology *topology, sl_app_routes_fn *routes,
                               void *routes_opaque, char *errstr, size_t errstr_size) {
    sl_app *app = calloc(1, sizeof(*app));
    if (!app) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    app->config = config;
    app->logger = *logger;
    app->lock_fd = -1;
    app->topology = topology;
    app->routes = routes;
    app->routes_opaque = routes_opaque;
    app->metrics = sl_metrics_new(16384);
    if (!app->metrics) {
        free(app);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    app->started_ms = sl_clock_mono_ms();
    /* Routes are fixed when the server starts, and the gateway's need the
     * engine: so the server starts after the engine, and the gateway
     * (which advertises the bound port) after the server. */
    if (lock_state_dir(app, errstr, errstr_size) || create_http(app, errstr, errstr_size) ||
        start_kafka(app, errstr, errstr_size) || start_engine(app, errstr, errstr_size) ||
        create_gateway(app, errstr, errstr_size) || start_http(app, errstr, errstr_size) ||
        (app->gateway &&
         sl_gateway_start(app->gateway, sl_http_server_port(app->http), errstr, errstr_size))) {
        sl_app_destroy(app);
        return NULL;
    }
    sl_log(&app->logger, SL_LOG_INFO, "app", "sluice %s started: application.id=%s state=%s",
           SLUICE_VERSION, sl_config_get(config, "application.id"), app->state_path);
    return app;
}

static void probe_kafka(sl_app *app) {
    char why[512];
    int brokers = 0;
    bool reachable = sl_kafka_probe(app->rk, 2000, &brokers, why, sizeof(why)) == SL_OK;
    bool was = atomic_exchange(&app->kafka_reachable, reachable);
    atomic_store(&app->kafka_brokers, brokers);
    if (reachable && !was)
        sl_log(&app->logger, SL_LOG_INFO, "kafka", "cluster reachable: %d broker%s", brokers,
               brokers == 1 ? "" : "s");
    else if (!reachable && was)
        sl_log(&app->logger, SL_LOG_WARN, "kafka", "cluster unreachable: %s", why);
}

sl_err sl_app_run(sl_app *app, volatile sig_atomic_t *stop) {
    double interval_s = (double)sl_config_get_int(app->config, "health.kafka.interval.ms") / 1000.0;
    int64_t last_probe_ms = 0;
    bool first = true;
    while (!*stop) {
        if (first || seconds_since(last_probe_ms) >= interval_s) {
            probe_kafka(app);
            if (first && !atomic_load(&app->kafka_reachable))
                sl_log(&app->logger, SL_LOG_WARN, "kafka", "cluster not reachable yet at %s",
                       app->bootstrap);
            last_probe_ms = sl_clock_mono_ms();
            first = false;
        }
        if (app->engine) {
            rd_kafka_poll(app->rk, 0);
            sl_err err = sl_engine_poll(app->engine, 100);
            if (err) {
                sl_log(&app->logger, SL_LOG_ERROR, "app", "engine failed: %s", sl_err_msg(err));
                sl_engine_close(app->engine);
                return err;
            }
        } else {
            rd_kafka_poll(app->rk, 100);
        }
    }
    sl_log(&app->logger, SL_LOG_INFO, "app", "stopping");
    if (app->engine)
        sl_engine_close(app->engine);
    return SL_OK;
}

sl_engine *sl_app_engine(const sl_app *app) {
    return app->engine;
}

int sl_app_http_port(const sl_app *app) {
    return sl_http_server_port(app->http);
}

int sl_app_admin_port(const sl_app *app) {
    return sl_http_server_port(app->admin);
}

const char *sl_app_bootstrap(const sl_app *app) {
    return app->bootstrap;
}

void sl_app_destroy(sl_app *app) {
    if (!app)
        return;
    sl_http_server_destroy(app->http);
    sl_http_server_destroy(app->admin);
    sl_gateway_destroy(app->gateway); /* after the handlers, before the engine */
    sl_httpc_close_idle();            /* the kept-alive connections to other instances */
    if (app->engine) {
        sl_engine_close(app->engine);
        sl_engine_destroy(app->engine);
    }
    if (app->rk) {
        rd_kafka_flush(app->rk, 5000);
        rd_kafka_destroy(app->rk);
    }
    sl_embedded_cluster_destroy(app->embedded);
    free(app->bootstrap);
    if (app->lock_fd >= 0)
        close(app->lock_fd);
    sl_metrics_destroy(app->metrics); /* after the HTTP server that serves it */
    free(app);
}

sl_gateway *sl_app_gateway(const sl_app *app) {
    return app->gateway;
}
