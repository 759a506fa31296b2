/*
 * lifecycle.c: the Postgres sink's construction and teardown: config, the
 * batch buffers, metrics, the HTTP endpoints (/healthz, /readyz, /metrics),
 * and at start the DLQ producer and the input and dead-letter topics.
 */
#include "connectors/postgres/sink.h"
#include "connectors/postgres/sink_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/config.h"
#include "processor/http/metrics.h"
#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)opaque;
    sl_pgsink *sink = rd_kafka_opaque(rk);
    if (m->err)
        atomic_fetch_add(&sink->dlq_delivery_failures, 1);
}

/* ---- HTTP ----------------------------------------------------------------- */

static void respond_json(sl_http_response *resp, int status, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text || sl_http_respond_json(resp, status, text))
        sl_http_respond_error(resp, 500, "out of memory");
    free(text);
}

static void healthz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    (void)req;
    respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void readyz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    sl_pgsink *sink = opaque;
    sl_pgsink_state state = sl_pgsink_state_get(sink);
    bool ready = state == SL_PGSINK_RUNNING || state == SL_PGSINK_REBUILDING;
    json_int_t rows = 0;
    for (int t = 0; t < N_TOPICS; t++)
        rows += (json_int_t)sl_counter_value(sink->m.rows[t]);
    respond_json(resp, ready ? 200 : 503,
                 json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "status",
                           ready ? "ready" : "not_ready", "state", sl_pgsink_state_name(state),
                           "rows", rows, "records", (json_int_t)sl_counter_value(sink->m.records),
                           "dead_lettered", (json_int_t)sl_counter_value(sink->m.dead_lettered),
                           "lag", (json_int_t)sl_gauge_value(sink->m.lag)));
    if (!ready)
        sl_http_response_retry_after(resp, 1);
}

static void register_metrics(sl_pgsink *sink) {
    sl_metrics *m = sink->metrics;
    for (int t = 0; t < N_TOPICS; t++) {
        const char *labels[] = {"table", sl_pgsink_default_tables[t], NULL};
        sink->m.rows[t] = sl_metrics_counter(
            m, "sluice_pgsink_rows_total",
            "Rows written to Postgres in committed transactions (rate() gives rows/s).", labels);
    }
    sink->m.records = sl_metrics_counter(m, "sluice_pgsink_records_total",
                                         "Records consumed and committed to Postgres.", NULL);
    sink->m.dead_lettered = sl_metrics_counter(
        m, "sluice_pgsink_dead_lettered_total",
        "Records sent to the dead-letter topic (undecodable, or refused by Postgres).", NULL);
    sink->m.transactions =
        sl_metrics_counter(m, "sluice_pgsink_transactions_total", "Committed batches.", NULL);
    sink->m.pg_failures = sl_metrics_counter(m, "sluice_pgsink_postgres_failures_total",
                                             "Failed Postgres connects or batches.", NULL);
    sink->m.resyncs = sl_metrics_counter(m, "sluice_pgsink_resyncs_total",
                                         "Seeks to the offsets stored in Postgres.", NULL);
    static const double rows_bounds[] = {1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000};
    sink->m.batch_rows = sl_metrics_histogram(m, "sluice_pgsink_batch_rows",
                                              "Rows per committed batch.", NULL, rows_bounds, 9);
    static const double s_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,   1,    2.5,   5,    10};
    sink->m.txn_seconds = sl_metrics_histogram(m, "sluice_pgsink_transaction_seconds",
                                               "Duration of a batch transaction, BEGIN to COMMIT.",
                                               NULL, s_bounds, 12);
    sink->m.lag = sl_metrics_gauge(
        m, "sluice_pgsink_lag_records",
        "Records between the offsets stored in Postgres and the partitions' ends.", NULL);
    for (int i = 0; i < 4; i++) {
        const char *labels[] = {"state", sl_pgsink_state_name((sl_pgsink_state)i), NULL};
        sink->m.state[i] = sl_metrics_gauge(m, "sluice_pgsink_state",
                                            "1 for the sink's current state, else 0.", labels);
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

sl_pgsink *sl_pgsink_new(const sl_config *config, const sl_logger *logger, sl_pgsink_mode mode,
                         char *errstr, size_t errstr_size) {
    const char *dsn = sl_config_get(config, "pg.dsn");
    if (!dsn || !dsn[0]) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "pg.dsn (or SLUICE_PG_DSN) must be set");
        return NULL;
    }
    if (!sl_config_get(config, "bootstrap.servers")[0]) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "the sink needs a real Kafka cluster: set bootstrap.servers (KAFKA_BOOTSTRAP)");
        return NULL;
    }
    sl_pgsink *sink = calloc(1, sizeof(*sink));
    if (!sink) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    sink->logger = *logger;
    sink->config = config;
    sink->mode = mode;
    sink->dsn = dsn;
    const char *app_id = sl_config_get(config, "application.id");
    const char *group = sl_config_get(config, "pg.sink.group.id");
    if (group[0])
        snprintf(sink->group_id, sizeof(sink->group_id), "%s", group);
    else
        snprintf(sink->group_id, sizeof(sink->group_id), "%s-pgsink", app_id);
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s", sink->group_id);
    snprintf(sink->topics[T_USERS], sizeof(sink->topics[0]), "%s",
             sl_config_get(config, "pg.sink.users.topic"));
    snprintf(sink->topics[T_MESSAGES], sizeof(sink->topics[0]), "%s",
             sl_config_get(config, "pg.sink.messages.topic"));
    snprintf(sink->dlq_topic, sizeof(sink->dlq_topic), "%s-dlq", app_id);
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = sl_pgsink_default_tables[t];
    sink->batch_rows = (int)sl_config_get_int(config, "pg.sink.batch.rows");
    sink->linger_ms = (int)sl_config_get_int(config, "pg.sink.linger.ms");
    sink->backoff_min_ms = (int)sl_config_get_int(config, "pg.sink.retry.backoff.ms");
    sink->backoff_max_ms = (int)sl_config_get_int(config, "pg.sink.retry.backoff.max.ms");
    if (sink->backoff_max_ms < sink->backoff_min_ms)
        sink->backoff_max_ms = sink->backoff_min_ms;
    sink->backoff_ms = sink->backoff_min_ms;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p] = (part_state){.committed_next = -1, .pending_next = -1};
    sink->msgs = calloc((size_t)sink->batch_rows, sizeof(*sink->msgs));
    sink->rows = calloc((size_t)sink->batch_rows, sizeof(*sink->rows));
    sink->dlq = calloc((size_t)sink->batch_rows, sizeof(*sink->dlq));
    sink->n_key_slots = 16;
    while (sink->n_key_slots < 2 * (size_t)sink->batch_rows)
        sink->n_key_slots *= 2;
    sink->key_slots = calloc(sink->n_key_slots, sizeof(*sink->key_slots));
    sink->arena = sl_arena_new(ARENA_CAP);
    sink->metrics = sl_metrics_new(256);
    if (!sink->msgs || !sink->rows || !sink->dlq || !sink->key_slots || !sink->arena ||
        !sink->metrics) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    register_metrics(sink);
    sl_pgsink_set_state(sink, SL_PGSINK_STARTING);
    sl_http_options options = {
        .host = sl_config_get(config, "http.host"),
        .port = (int)sl_config_get_int(config, "http.port"),
        .threads = (int)sl_config_get_int(config, "http.threads"),
        .max_connections = (int)sl_config_get_int(config, "http.max.connections"),
        .connection_timeout_s = (int)sl_config_get_int(config, "http.connection.timeout.s"),
        .header_timeout_s = (int)sl_config_get_int(config, "http.header.timeout.s"),
        .body_timeout_s = (int)sl_config_get_int(config, "http.body.timeout.s"),
        .max_body_bytes = 4096,
    };
    sink->http = sl_http_server_new(&options, &sink->logger, errstr, errstr_size);
    if (!sink->http)
        goto fail;
    sl_err err;
    if ((err = sl_http_route(sink->http, "GET", "/healthz", healthz, sink)) ||
        (err = sl_http_route(sink->http, "GET", "/readyz", readyz, sink)) ||
        (err = sl_http_route(sink->http, "GET", "/metrics", sl_metrics_http_handler,
                             sink->metrics))) {
        sl_fail(errstr, errstr_size, err, "cannot register routes: %s", sl_err_msg(err));
        goto fail;
    }
    if (sl_http_server_start(sink->http, errstr, errstr_size))
        goto fail;
    LOG(sink, SL_LOG_INFO, "listening on http://%s:%d (GET /healthz, /readyz, /metrics)",
        options.host, sl_http_server_port(sink->http));
    return sink;
fail:
    sl_pgsink_destroy(sink);
    return NULL;
}

unsigned long long sl_pgsink_rows_written(const sl_pgsink *sink) {
    unsigned long long rows = 0;
    for (int t = 0; t < N_TOPICS; t++)
        rows += sl_counter_value(sink->m.rows[t]);
    return rows;
}

int sl_pgsink_http_port(const sl_pgsink *sink) {
    return sl_http_server_port(sink->http);
}

void sl_pgsink_destroy(sl_pgsink *sink) {
    if (!sink)
        return;
    sl_http_server_destroy(sink->http);
    if (sink->consumer) {
        sl_pgsink_batch_clear(sink);
        rd_kafka_destroy(sink->consumer);
    }
    if (sink->producer) {
        rd_kafka_flush(sink->producer, 5000);
        rd_kafka_destroy(sink->producer);
    }
    sl_pgsink_pg_close(sink);
    sl_metrics_destroy(sink->metrics);
    sl_arena_destroy(sink->arena);
    free(sink->copy.data);
    free(sink->msgs);
    free(sink->rows);
    free(sink->dlq);
    free(sink->key_slots);
    free(sink);
}

/* The DLQ producer, the input topics' existence and the DLQ topic. */
sl_err sl_pgsink_start_kafka(sl_pgsink *sink, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, sl_config_get(sink->config, "bootstrap.servers"),
                          sink->config, &sink->logger, errstr, errstr_size);
    if (!conf)
        return SL_ERR_CONFIG;
    if (sl_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return SL_ERR_CONFIG;
    }
    rd_kafka_conf_set_opaque(conf, sink);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    char why[512];
    sink->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!sink->producer) {
        rd_kafka_conf_destroy(conf);
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create producer: %s", why);
    }
    for (int t = 0; t < N_TOPICS; t++) {
        sl_err err = sl_admin_topic_partitions(sink->producer, sink->topics[t], ADMIN_TIMEOUT,
                                               &sink->n_partitions[t], errstr, errstr_size);
        if (err)
            return err == SL_ERR_NOT_FOUND
                       ? sl_fail(errstr, errstr_size, err, "input topic %s does not exist",
                                 sink->topics[t])
                       : err;
        if (sink->n_partitions[t] > MAX_PARTITIONS)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s has %d partitions; the sink tracks at most %d", sink->topics[t],
                           sink->n_partitions[t], MAX_PARTITIONS);
    }
    sl_err err = sl_admin_topic_partitions(sink->producer, sink->dlq_topic, ADMIN_TIMEOUT,
                                           &sink->dlq_partitions, errstr, errstr_size);
    if (err == SL_ERR_NOT_FOUND) {
        /* Same partition count as the engine would give it (its first source). */
        sink->dlq_partitions = sink->n_partitions[T_MESSAGES];
        sl_topic_spec spec = {
            .name = sink->dlq_topic,
            .partitions = sink->dlq_partitions,
            .replication_factor = (int)sl_config_get_int(sink->config, "topic.replication.factor"),
        };
        err = sl_admin_ensure_topic(sink->producer, &spec, ADMIN_TIMEOUT, errstr, errstr_size);
    }
    return err;
}
