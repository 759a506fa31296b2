/*
 * gateway.c: routing of interactive queries and the reply path for route
 * handlers (see gateway.h).
 *
 * Deciding where a read is answered (sl_gateway_get / sl_gateway_range):
 *
 *   engine query ---- SL_OK ----------------------------> LOCAL / MISSING
 *        |       ---- NOT_READY (restoring, starting) --> 503 Retry-After
 *        |       ---- STORE error ---------------------> 500
 *        +-- NOT_OWNER --> request carries the hop header? -> 503 (moving)
 *                          owner in the membership table?
 *                            none, or this instance ------> 503 (rebalancing)
 *                            another instance -> forward --> relay its answer
 *                                                  failed --> 503 Retry-After
 *
 * The engine decides "owned here" from the task it runs, not from the
 * membership table, so a stale table can only cost a hop or a 503, never a
 * read of a store this instance does not hold.
 *
 * A local read first waits until every commit the engine had begun is
 * applied to its stores (sl_engine_query_settle): a write whose
 * transaction committed (its reply is visible) is then readable, so a
 * client that got its answer reads what it wrote, here or through a hop.
 *
 * Awaiting a key (sl_gateway_await): the route of a command whose effect
 * lands in another store than the one it answered from (registration ->
 * users-by-id, one repartition hop later) waits until the key exists at
 * the owner of its partition before it answers: locally, or by asking the
 * owner (GET /v1/await/{store}/{hex key}/{ms}, signed like a hop, refused
 * without) to wait locally. Either way the key is then in the owner's
 * store (applied), so every later read finds it.
 *
 * "Carries the hop header" means a hop header with a valid MAC under the
 * cluster secret (trust.h). The guard (hop_guard) answers 401 to any request
 * whose hop header is not valid, before routing, so a client cannot claim
 * to be an instance (and, e.g., skip the per-address login throttle).
 */
#include "processor/gateway/gateway.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/base/clock.h"
#include "processor/base/text.h"
#include "processor/base/trace.h"
#include "processor/gateway/trust.h"
#include "processor/http/client.h"
#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"

#define RETRY_AFTER_S 1
/* The longest a read waits for the commits begun before it to be applied. */
#define SETTLE_MS 2000

struct sl_gateway {
    sl_logger logger;
    const sl_config *config;
    sl_engine *engine;
    char *bootstrap;
    sl_members *members;
    sl_replies *replies;
    sl_trust *trust;
    int hop_window_s;
    sl_metrics *metrics;       /* borrowed; NULL: none */
    sl_counter *hops_refused; /* X-Sluice-Hop headers without a valid MAC */
    int forward_timeout_ms;
    size_t forward_max_bytes;
    int reply_timeout_ms;
    char address[SL_MEMBERS_MAX_ADDRESS];
};

#define LOG(g, level, ...) sl_log(&(g)->logger, level, "gateway", __VA_ARGS__)

sl_gateway *sl_gateway_new(const sl_config *config, sl_engine *engine, const char *bootstrap,
                           const sl_logger *logger, char *errstr, size_t errstr_size) {
    sl_gateway *g = calloc(1, sizeof(*g));
    if (!g || !(g->bootstrap = strdup(bootstrap))) {
        free(g);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    g->logger = *logger;
    g->config = config;
    g->engine = engine;
    g->forward_timeout_ms = (int)sl_config_get_int(config, "gateway.forward.timeout.ms");
    g->forward_max_bytes = (size_t)sl_config_get_int(config, "gateway.forward.max.bytes");
    g->reply_timeout_ms = (int)sl_config_get_int(config, "gateway.reply.timeout.ms");
    g->hop_window_s = (int)sl_config_get_int(config, "cluster.hop.window.s");
    g->hops_refused = sl_metrics_counter(NULL, "sluice_hops_refused_total", NULL, NULL);
    g->trust = sl_trust_load(config, logger, errstr, errstr_size);
    if (!g->trust) {
        sl_gateway_destroy(g);
        return NULL;
    }
    return g;
}

void sl_gateway_set_metrics(sl_gateway *g, sl_metrics *metrics) {
    g->metrics = metrics;
    g->hops_refused = sl_metrics_counter(
        metrics, "sluice_hops_refused_total",
        "Requests refused (401) for an X-Sluice-Hop header without a valid MAC", NULL);
}

sl_err sl_gateway_start(sl_gateway *g, int http_port, char *errstr, size_t errstr_size) {
    const char *advertised = sl_config_get(g->config, "gateway.advertised.address");
    const char *host = sl_config_get(g->config, "http.host");
    int n = advertised[0] ? snprintf(g->address, sizeof(g->address), "%s", advertised)
            : strchr(host, ':')
                ? snprintf(g->address, sizeof(g->address), "[%s]:%d", host, http_port)
                : snprintf(g->address, sizeof(g->address), "%s:%d", host, http_port);
    if (n < 0 || (size_t)n >= sizeof(g->address))
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "advertised address too long");
    const char *app_id = sl_engine_application_id(g->engine);
    char topic[256];
    snprintf(topic, sizeof(topic), "%s-members", app_id);
    sl_members_options options = {
        .topic = topic,
        .instance_id = sl_engine_instance_id(g->engine),
        .address = g->address,
        .interval_ms = (int)sl_config_get_int(g->config, "gateway.members.interval.ms"),
        .expiry_ms = (int)sl_config_get_int(g->config, "gateway.members.expiry.ms"),
        .replication_factor = (int)sl_config_get_int(g->config, "topic.replication.factor"),
        .trust = g->trust,
        .rejected = sl_metrics_counter(
            g->metrics, "sluice_members_rejected_total",
            "Membership records ignored for a missing or invalid MAC (forged or foreign)", NULL),
    };
    g->members = sl_members_new(g->config, g->bootstrap, &options, g->engine, &g->logger, errstr,
                                errstr_size);
    if (!g->members)
        return SL_ERR_KAFKA;
    /* The reply topic belongs to the engine (it creates it for topologies
     * that answer commands); without it there is no reply path. */
    snprintf(topic, sizeof(topic), "%s-replies", app_id);
    char why[512];
    g->replies = sl_replies_new(g->config, g->bootstrap, topic, sl_engine_instance_id(g->engine),
                                (size_t)sl_config_get_int(g->config, "gateway.reply.max.waiters"),
                                &g->logger, why, sizeof(why));
    if (!g->replies)
        LOG(g, SL_LOG_INFO, "no reply path (%s): commands cannot be answered over HTTP", why);
    return SL_OK;
}

void sl_gateway_destroy(sl_gateway *g) {
    if (!g)
        return;
    sl_replies_destroy(g->replies);
    sl_members_destroy(g->members);
    sl_trust_destroy(g->trust);
    free(g->bootstrap);
    free(g);
}

sl_engine *sl_gateway_engine(sl_gateway *g) {
    return g->engine;
}

sl_replies *sl_gateway_replies(sl_gateway *g) {
    return g->replies;
}

sl_members *sl_gateway_members(sl_gateway *g) {
    return g->members;
}

void sl_gateway_error(sl_gateway *g, const sl_http_request *req, sl_http_response *resp, int status,
                      const char *message, int retry_after_s) {
    sl_log(&g->logger, status >= 500 ? SL_LOG_WARN : SL_LOG_DEBUG, "gateway",
           "request %s %s %s: %d %s", sl_http_request_id(req), sl_http_request_method(req),
           sl_http_request_path(req), status, message);
    sl_http_respond_error(resp, status, message);
    if (retry_after_s > 0)
        sl_http_response_retry_after(resp, retry_after_s);
}

static void path_escape(const char *path, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p && len + 4 < size; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p)) {
            out[len++] = (char)*p;
        } else {
            out[len++] = '%';
            out[len++] = hex[*p >> 4];
            out[len++] = hex[*p & 15];
        }
    }
    out[len] = '\0';
}

/* The path and query a hop MAC covers: the decoded path and the query as
 * sl_http_request_query_string rebuilds it (the same on both sides). */
static sl_err hop_target(const sl_http_request *req, char *out, size_t size) {
    int n = snprintf(out, size, "%s", sl_http_request_path(req));
    if (n < 0 || (size_t)n >= size)
        return SL_ERR_FULL;
    return sl_http_request_query_string(req, out + n, size - (size_t)n);
}

bool sl_gateway_forwarded(sl_gateway *g, const sl_http_request *req) {
    const char *hop = sl_http_request_header(req, SL_GATEWAY_HOP_HEADER);
    char target[6144];
    if (!hop || hop_target(req, target, sizeof(target)))
        return false;
    size_t body_len = 0;
    const char *body = sl_http_request_body(req, &body_len);
    return sl_trust_hop_verify(g->trust, hop, sl_http_request_method(req), target, body, body_len,
                               sl_clock_wall_ms() / 1000, g->hop_window_s) == SL_TRUST_VALID;
}

/* What a sealed body is bound to (trust.h): its direction and its hop. */
static void seal_context(char *out, size_t size, const char *direction, const char *hop) {
    snprintf(out, size, "%s %s", direction, hop);
}

/* The guard's filter on the answer to a valid hop: sealed for the
 * instance that asked, whatever the route answered. When sealing fails
 * (out of memory) the answer is a plain 500, which that instance refuses
 * as unsealed. */
static void seal_answer(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    char context[SL_TRUST_HOP_MAX + 16];
    seal_context(context, sizeof(context), "answer",
                 sl_http_request_header(req, SL_GATEWAY_HOP_HEADER));
    size_t len = 0;
    const char *body = sl_http_response_body(resp, &len);
    unsigned char *sealed;
    size_t sealed_len;
    if (sl_trust_seal(g->trust, context, body ? body : "", body ? len : 0, &sealed, &sealed_len)) {
        sl_http_respond_error(resp, 500, "out of memory");
        return;
    }
    sl_http_response_replace_body(resp, (char *)sealed, sealed_len);
    sl_http_response_header(resp, SL_GATEWAY_SEALED_HEADER, SL_GATEWAY_SEALED_V1);
}

/* Open the answer to `hop` in place: false (logged) when it is not sealed
 * for it (a plain answer is refused: a party on the network could have
 * written it). */
static bool open_answer(sl_gateway *g, const char *hop, const char *address,
                        sl_httpc_response *answer) {
    char mark[16], context[SL_TRUST_HOP_MAX + 16];
    if (!sl_httpc_response_header(answer, SL_GATEWAY_SEALED_HEADER, mark, sizeof(mark)) ||
        strcmp(mark, SL_GATEWAY_SEALED_V1) != 0) {
        LOG(g, SL_LOG_WARN, "an unsealed answer (%d) from %s: refused", answer->status, address);
        return false;
    }
    seal_context(context, sizeof(context), "answer", hop);
    char *plain;
    size_t plain_len;
    if (sl_trust_open(g->trust, context, answer->body, answer->body_len, &plain, &plain_len) !=
        SL_TRUST_VALID) {
        LOG(g, SL_LOG_WARN, "a sealed answer from %s does not open: refused", address);
        return false;
    }
    free(answer->body);
    answer->body = plain;
    answer->body_len = plain_len;
    return true;
}

/* Refuse a request that claims to come from an instance. */
static bool refuse_hop(sl_gateway *g, const sl_http_request *req, sl_http_response *resp,
                       int status, const char *why) {
    sl_counter_add(g->hops_refused, 1);
    sl_gateway_error(g, req, resp, status, why, 0);
    return true;
}

/* The HTTP server's guard: a hop header must carry a valid MAC, and a body
 * with it must be sealed; the body is opened for the route and the answer
 * sealed on its way back. */
static bool hop_guard(void *opaque, sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    const char *hop = sl_http_request_header(req, SL_GATEWAY_HOP_HEADER);
    if (!hop)
        return false;
    const char *mark = sl_http_request_header(req, SL_GATEWAY_SEALED_HEADER);
    size_t len = 0;
    const char *body = sl_http_request_body(req, &len);
    if (mark) {
        char context[SL_TRUST_HOP_MAX + 16], *plain;
        size_t plain_len;
        seal_context(context, sizeof(context), "request", hop);
        if (strcmp(mark, SL_GATEWAY_SEALED_V1) != 0 ||
            sl_trust_open(g->trust, context, body, len, &plain, &plain_len) != SL_TRUST_VALID)
            return refuse_hop(g, req, resp, 401,
                              "a sealed body that does not open under the cluster secret");
        sl_http_request_replace_body(req, plain, plain_len);
    }
    if (!sl_gateway_forwarded(g, req))
        return refuse_hop(g, req, resp, 401,
                          "X-Sluice-Hop is reserved for instances of this cluster (no valid MAC)");
    if (!mark && len) /* signed, but readable by anyone on the way */
        return refuse_hop(g, req, resp, 400,
                          "a request between instances must have its body sealed");
    sl_http_response_filter(resp, seal_answer, g);
    return false;
}

/* Forward the request to `address` and relay the answer. */
static void forward(sl_gateway *g, const sl_http_request *req, sl_http_response *resp,
                    const char *address) {
    char target[4096], query[2048];
    path_escape(sl_http_request_path(req), target, sizeof(target) - sizeof(query));
    if (sl_http_request_query_string(req, query, sizeof(query))) {
        sl_gateway_error(g, req, resp, 414, "query string too long to forward", 0);
        return;
    }
    strncat(target, query, sizeof(target) - strlen(target) - 1);
    size_t body_len = 0;
    const char *body = sl_http_request_body(req, &body_len);
    char signed_target[6144], hop[SL_TRUST_HOP_MAX];
    if (hop_target(req, signed_target, sizeof(signed_target)) ||
        sl_trust_hop_sign(g->trust, sl_http_request_method(req), signed_target, body, body_len,
                          sl_clock_wall_ms() / 1000, sl_engine_instance_id(g->engine), hop,
                          sizeof(hop))) {
        sl_gateway_error(g, req, resp, 500, "the request could not be signed for forwarding", 0);
        return;
    }
    /* The body (a login's password) crosses sealed. */
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    char context[SL_TRUST_HOP_MAX + 16];
    seal_context(context, sizeof(context), "request", hop);
    if (body_len && sl_trust_seal(g->trust, context, body, body_len, &sealed, &sealed_len)) {
        sl_gateway_error(g, req, resp, 500, "out of memory", 0);
        return;
    }
    sl_httpc_header headers[9];
    size_t n = 0;
    headers[n++] = (sl_httpc_header){SL_GATEWAY_HOP_HEADER, hop};
    if (sealed)
        headers[n++] = (sl_httpc_header){SL_GATEWAY_SEALED_HEADER, SL_GATEWAY_SEALED_V1};
    headers[n++] = (sl_httpc_header){"X-Sluice-Origin-Request-Id", sl_http_request_id(req)};
    const char *trace = sl_http_request_traceparent(req);
    if (trace) /* the owner's span is a child of ours */
        headers[n++] = (sl_httpc_header){SL_TRACEPARENT_HEADER, trace};
    static const char *const passed[] = {"Authorization", "Content-Type", "Accept",
                                         "Accept-Language", NULL};
    for (const char *const *name = passed; *name; name++) {
        const char *value = sl_http_request_header(req, *name);
        if (value)
            headers[n++] = (sl_httpc_header){*name, value};
    }
    sl_httpc_response answer;
    char why[512];
    sl_err err = sl_httpc_request(address, sl_http_request_method(req), target, headers, n,
                                  (const char *)sealed, sealed_len, g->forward_timeout_ms,
                                  g->forward_max_bytes, &answer, why, sizeof(why));
    free(sealed);
    if (!err && !open_answer(g, hop, address, &answer)) {
        sl_httpc_response_free(&answer);
        snprintf(why, sizeof(why), "its answer was not sealed for this request");
        err = SL_ERR_IO;
    }
    if (err == SL_ERR_FULL) {
        sl_gateway_error(g, req, resp, 502, "the owner's answer is too large to relay", 0);
        return;
    }
    if (err) {
        LOG(g, SL_LOG_WARN, "request %s: forwarding to %s failed: %s", sl_http_request_id(req),
            address, why);
        sl_gateway_error(g, req, resp, 503, "the instance that owns this key did not answer",
                         RETRY_AFTER_S);
        return;
    }
    char content_type[128] = "application/json", value[256];
    sl_httpc_response_header(&answer, "Content-Type", content_type, sizeof(content_type));
    if (sl_http_respond(resp, answer.status, content_type, answer.body, answer.body_len)) {
        sl_httpc_response_free(&answer);
        sl_gateway_error(g, req, resp, 500, "out of memory", 0);
        return;
    }
    if (sl_httpc_response_header(&answer, "Retry-After", value, sizeof(value)))
        sl_http_response_retry_after(resp, atoi(value) > 0 ? atoi(value) : RETRY_AFTER_S);
    if (sl_httpc_response_header(&answer, SL_GATEWAY_SERVED_BY_HEADER, value, sizeof(value)))
        sl_http_response_header(resp, SL_GATEWAY_SERVED_BY_HEADER, value);
    if (sl_httpc_response_header(&answer, SL_GATEWAY_STALE_LAG_HEADER, value, sizeof(value)))
        sl_http_response_header(resp, SL_GATEWAY_STALE_LAG_HEADER, value);
    sl_http_response_header(resp, "X-Sluice-Forwarded-To", address);
    LOG(g, SL_LOG_DEBUG, "request %s forwarded to %s: %d", sl_http_request_id(req), address,
        answer.status);
    sl_httpc_response_free(&answer);
}

/* Everything but a local answer: 503s, 500s and forwarding. */
static sl_gateway_outcome not_local(sl_gateway *g, const sl_http_request *req,
                                    sl_http_response *resp, const char *store, const void *key,
                                    size_t key_len, sl_err err) {
    if (err == SL_ERR_NOT_READY) {
        sl_gateway_error(g, req, resp, 503, "the store is restoring or the instance is starting",
                         RETRY_AFTER_S);
        return SL_GATEWAY_ANSWERED;
    }
    if (err == SL_ERR_NOT_FOUND) {
        sl_gateway_error(g, req, resp, 404, "no such store", 0);
        return SL_GATEWAY_ANSWERED;
    }
    if (err != SL_ERR_NOT_OWNER) {
        sl_gateway_error(g, req, resp, 500, "the store could not be read", 0);
        return SL_GATEWAY_ANSWERED;
    }
    if (sl_gateway_forwarded(g, req)) {
        sl_gateway_error(g, req, resp, 503, "the key's owner is moving (rebalance in progress)",
                         RETRY_AFTER_S);
        return SL_GATEWAY_ANSWERED;
    }
    int32_t partition;
    const char *topic;
    char owner_id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
    if (sl_engine_query_partition(g->engine, store, key, key_len, &partition, &topic) ||
        !g->members || sl_members_owner(g->members, topic, partition, owner_id, address) != SL_OK ||
        strcmp(owner_id, sl_engine_instance_id(g->engine)) == 0) {
        sl_gateway_error(g, req, resp, 503, "the key's owner is not known yet (rebalancing)",
                         RETRY_AFTER_S);
        return SL_GATEWAY_ANSWERED;
    }
    forward(g, req, resp, address);
    return SL_GATEWAY_ANSWERED;
}

/* ?allow_stale=true: the client accepts an answer from a standby replica
 * (Kafka Streams' stale stores). -1 (after a 400) for another value. */
static int allow_stale(sl_gateway *g, const sl_http_request *req, sl_http_response *resp) {
    const char *value = sl_http_request_query(req, "allow_stale");
    if (!value || strcmp(value, "false") == 0)
        return 0;
    if (strcmp(value, "true") == 0)
        return 1;
    sl_gateway_error(g, req, resp, 400, "allow_stale must be true or false", 0);
    return -1;
}

/* A local answer: who served it, and how stale it is when a standby did. */
static void served_here(sl_gateway *g, sl_http_response *resp, bool stale, int64_t lag) {
    sl_http_response_header(resp, SL_GATEWAY_SERVED_BY_HEADER, sl_engine_instance_id(g->engine));
    if (stale) {
        char value[32];
        snprintf(value, sizeof(value), "%lld", (long long)lag);
        sl_http_response_header(resp, SL_GATEWAY_STALE_LAG_HEADER, value);
    }
}

sl_gateway_outcome sl_gateway_get(sl_gateway *g, const sl_http_request *req, sl_http_response *resp,
                                  const char *store, const void *key, size_t key_len, char **value,
                                  size_t *value_len) {
    int stale = allow_stale(g, req, resp);
    if (stale < 0)
        return SL_GATEWAY_ANSWERED;
    int32_t partition;
    int64_t lag = 0;
    sl_err err = sl_engine_query_get(g->engine, store, key, key_len, value, value_len, &partition);
    bool from_standby = false;
    if (stale && (err == SL_ERR_NOT_OWNER || err == SL_ERR_NOT_READY)) {
        sl_err standby = sl_engine_query_get_stale(g->engine, store, key, key_len, value, value_len,
                                                   &partition, &lag);
        if (standby == SL_OK || standby == SL_ERR_NOT_FOUND) {
            err = standby;
            from_standby = true;
        }
    }
    if (err == SL_ERR_NOT_FOUND && partition >= 0 && !from_standby) {
        /* Absent, or written by a commit not applied yet: settle, look again. */
        if (sl_engine_query_settle(g->engine, SETTLE_MS) != SL_OK) {
            sl_gateway_error(g, req, resp, 503, "the store is behind its last commit; retry",
                             RETRY_AFTER_S);
            return SL_GATEWAY_ANSWERED;
        }
        err = sl_engine_query_get(g->engine, store, key, key_len, value, value_len, &partition);
    }
    if (err == SL_OK || (err == SL_ERR_NOT_FOUND && partition >= 0)) {
        served_here(g, resp, from_standby, lag);
        return err == SL_OK ? SL_GATEWAY_LOCAL : SL_GATEWAY_MISSING;
    }
    return not_local(g, req, resp, store, key, key_len, err);
}

sl_gateway_outcome sl_gateway_range(sl_gateway *g, const sl_http_request *req,
                                    sl_http_response *resp, const char *store,
                                    const void *routing_key, size_t routing_key_len,
                                    const sl_query_range *range, sl_query_visit_fn *visit,
                                    void *opaque) {
    int stale = allow_stale(g, req, resp);
    if (stale < 0)
        return SL_GATEWAY_ANSWERED;
    int32_t partition;
    int64_t lag = 0;
    /* A range may read writes of a commit not applied yet: settle first
     * (an instance that does not own the key settles for nothing). */
    if (!stale && sl_engine_query_settle(g->engine, SETTLE_MS) != SL_OK) {
        sl_gateway_error(g, req, resp, 503, "the store is behind its last commit; retry",
                         RETRY_AFTER_S);
        return SL_GATEWAY_ANSWERED;
    }
    sl_err err = sl_engine_query_range(g->engine, store, routing_key, routing_key_len, range, visit,
                                       opaque, NULL, &partition);
    bool from_standby = false;
    if (stale && (err == SL_ERR_NOT_OWNER || err == SL_ERR_NOT_READY)) {
        sl_err standby = sl_engine_query_range_stale(g->engine, store, routing_key, routing_key_len,
                                                     range, visit, opaque, NULL, &partition, &lag);
        if (standby == SL_OK) {
            err = standby;
            from_standby = true;
        }
    }
    if (err == SL_OK) {
        served_here(g, resp, from_standby, lag);
        return SL_GATEWAY_LOCAL;
    }
    return not_local(g, req, resp, store, routing_key, routing_key_len, err);
}

sl_err sl_gateway_request(sl_gateway *g, const char *topic, const void *key, size_t key_len,
                          sl_command_encode_fn *encode, void *opaque, Sluice__V1__Reply **reply) {
    *reply = NULL;
    if (!g->replies)
        return SL_ERR_NOT_READY;
    return sl_replies_request(g->replies, topic, key, key_len, encode, opaque, g->reply_timeout_ms,
                              reply, NULL);
}

/* ---- awaiting a key ------------------------------------------------------ */

static void respond_text(sl_gateway *g, const sl_http_request *req, sl_http_response *resp,
                         char *text);

static void pause_ms(int ms) {
    struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* The key's value here: SL_OK when it exists and holds `needle` (any value
 * when needle is NULL), SL_ERR_NOT_FOUND when not (yet), else the engine's
 * error (not the owner, restoring). */
static sl_err look_here(sl_gateway *g, const char *store, const void *key, size_t key_len,
                        const void *needle, size_t needle_len) {
    char *value = NULL;
    size_t value_len = 0;
    int32_t partition;
    sl_err err = sl_engine_query_get(g->engine, store, key, key_len, &value, &value_len, &partition);
    if (err == SL_OK && needle && !memmem(value, value_len, needle, needle_len))
        err = SL_ERR_NOT_FOUND;
    if (value)
        explicit_bzero(value, value_len); /* it may hold a password hash */
    free(value);
    if (err == SL_ERR_NOT_FOUND && partition < 0)
        return SL_ERR_INVALID; /* no such store */
    return err;
}

/* Wait here, as the owner, until `key` exists (holding `needle`): SL_OK,
 * SL_ERR_TIMEOUT, or the engine's error when this instance does not (or no
 * longer) own it. Found means applied to the store, so every later read
 * finds it too. A task store changes only when the loop thread applies a
 * commit (or the task changes hands), and each of those moves the engine's
 * applied generation: so the waiter looks once per change, woken at once,
 * instead of polling every 20 ms (up to 20 ms late at each hop it waits
 * for; the polling itself was cheap: under 1 % of the samples of perf
 * during make bench-identity). An earlier version settled on each look,
 * which cost a tenth of the instances' CPU. */
static sl_err await_local(sl_gateway *g, const char *store, const void *key, size_t key_len,
                          const void *needle, size_t needle_len, int64_t deadline) {
    for (;;) {
        uint64_t generation = sl_engine_applied_generation(g->engine);
        sl_err err = look_here(g, store, key, key_len, needle, needle_len);
        if (err != SL_ERR_NOT_FOUND)
            return err;
        if (sl_engine_await_applied(g->engine, generation, deadline) == SL_ERR_TIMEOUT)
            return SL_ERR_TIMEOUT;
    }
}

/* Ask the owner at `address` to wait up to wait_ms for the key: SL_OK when
 * it answered 200. */
static sl_err await_remote(sl_gateway *g, const char *address, const char *store,
                           const void *key, size_t key_len, const void *needle,
                           size_t needle_len, int wait_ms) {
    char hex[2 * SL_GATEWAY_AWAIT_KEY_MAX + 1], hex_needle[2 * SL_GATEWAY_AWAIT_KEY_MAX + 1];
    char target[5 * SL_GATEWAY_AWAIT_KEY_MAX + 512];
    if (key_len > SL_GATEWAY_AWAIT_KEY_MAX || needle_len > SL_GATEWAY_AWAIT_KEY_MAX ||
        strlen(store) > 200)
        return SL_ERR_INVALID;
    sl_hex_encode(key, key_len, hex);
    int n = snprintf(target, sizeof(target), "/v1/await/%s/%s/%d", store, hex, wait_ms);
    if (needle) {
        sl_hex_encode(needle, needle_len, hex_needle);
        snprintf(target + n, sizeof(target) - (size_t)n, "/%s", hex_needle);
    }
    char hop[SL_TRUST_HOP_MAX];
    if (sl_trust_hop_sign(g->trust, "GET", target, NULL, 0, sl_clock_wall_ms() / 1000,
                          sl_engine_instance_id(g->engine), hop, sizeof(hop)))
        return SL_ERR_INVALID;
    sl_httpc_header headers[] = {{SL_GATEWAY_HOP_HEADER, hop}};
    sl_httpc_response answer;
    char why[512];
    sl_err err = sl_httpc_request(address, "GET", target, headers, 1, NULL, 0,
                                  wait_ms + g->forward_timeout_ms, 4096, &answer, why, sizeof(why));
    if (err)
        return err;
    bool waited = answer.status == 200 && open_answer(g, hop, address, &answer);
    sl_httpc_response_free(&answer);
    return waited ? SL_OK : SL_ERR_NOT_READY;
}

sl_err sl_gateway_await(sl_gateway *g, const char *store, const void *key, size_t key_len,
                        const void *needle, size_t needle_len, int timeout_ms) {
    int64_t deadline = sl_clock_mono_ms() + timeout_ms;
    for (;;) {
        sl_err err = await_local(g, store, key, key_len, needle, needle_len, deadline);
        if (err == SL_OK || err == SL_ERR_TIMEOUT || err == SL_ERR_INVALID)
            return err;
        int64_t left = deadline - sl_clock_mono_ms();
        if (left <= 0)
            return SL_ERR_TIMEOUT;
        int32_t partition;
        const char *topic;
        char owner_id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
        if (err == SL_ERR_NOT_OWNER && g->members &&
            sl_engine_query_partition(g->engine, store, key, key_len, &partition, &topic) ==
                SL_OK &&
            sl_members_owner(g->members, topic, partition, owner_id, address) == SL_OK &&
            strcmp(owner_id, sl_engine_instance_id(g->engine)) != 0 &&
            await_remote(g, address, store, key, key_len, needle, needle_len, (int)left) == SL_OK)
            return SL_OK;
        if (sl_clock_mono_ms() >= deadline)
            return SL_ERR_TIMEOUT;
        pause_ms(50); /* restoring, moving, or the owner not known yet */
    }
}

/* GET /v1/await/{store}/{hex key}/{ms}[/{hex needle}]: for instances only
 * (a valid hop header); 200 once the key exists here (and its value holds
 * the needle's bytes), 404 when not within ms (at most the forwarding
 * timeout), 503 when this instance does not own it. */
static void await_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    if (!sl_gateway_forwarded(g, req)) {
        sl_gateway_error(g, req, resp, 403, "for instances of this cluster only", 0);
        return;
    }
    const char *store = sl_http_request_param(req, "store");
    const char *ms = sl_http_request_param(req, "ms");
    const char *hex_needle = sl_http_request_param(req, "needle");
    unsigned char key[SL_GATEWAY_AWAIT_KEY_MAX], needle[SL_GATEWAY_AWAIT_KEY_MAX];
    long key_len = sl_hex_decode(sl_http_request_param(req, "key"), key, sizeof(key));
    long needle_len = hex_needle ? sl_hex_decode(hex_needle, needle, sizeof(needle)) : 0;
    char *end = NULL;
    long wait_ms = strtol(ms, &end, 10);
    if (key_len < 0 || needle_len < 0 || !end || *end != '\0' || wait_ms < 0) {
        sl_gateway_error(g, req, resp, 400, "await: a store, a hex key and milliseconds", 0);
        return;
    }
    if (wait_ms > g->forward_timeout_ms)
        wait_ms = g->forward_timeout_ms;
    sl_err err = await_local(g, store, key, (size_t)key_len, hex_needle ? needle : NULL,
                             (size_t)needle_len, sl_clock_mono_ms() + wait_ms);
    if (err == SL_OK)
        respond_text(g, req, resp, strdup("{}"));
    else if (err == SL_ERR_TIMEOUT)
        sl_gateway_error(g, req, resp, 404, "the key did not appear in time", 0);
    else if (err == SL_ERR_INVALID)
        sl_gateway_error(g, req, resp, 400, "no such store", 0);
    else
        sl_gateway_error(g, req, resp, 503, "not the owner of the key's partition", RETRY_AFTER_S);
}

/* ---- generic routes ------------------------------------------------------ */

static void respond_text(sl_gateway *g, const sl_http_request *req, sl_http_response *resp,
                         char *text) {
    if (!text || sl_http_respond_json(resp, 200, text))
        sl_gateway_error(g, req, resp, 500, "out of memory", 0);
    free(text);
}

static void members_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    if (!g->members) {
        sl_gateway_error(g, req, resp, 503, "membership is starting", RETRY_AFTER_S);
        return;
    }
    respond_text(g, req, resp, sl_members_json(g->members));
}

static void metadata_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    const char *store = sl_http_request_param(req, "store");
    const char *key = sl_http_request_param(req, "key");
    int32_t partition;
    const char *topic;
    sl_err err = sl_engine_query_partition(g->engine, store, key, strlen(key), &partition, &topic);
    if (err) {
        not_local(g, req, resp, store, key, strlen(key), err);
        return;
    }
    char owner_id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
    bool known =
        g->members && sl_members_owner(g->members, topic, partition, owner_id, address) == SL_OK;
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:i, s:o}", "store", store, "key", key, "topic", topic, "partition",
        partition, "owner",
        known ? json_pack("{s:s, s:s}", "instance", owner_id, "address", address) : json_null());
    respond_text(g, req, resp, doc ? json_dumps(doc, JSON_COMPACT) : NULL);
    json_decref(doc);
}

bool sl_gateway_owner(sl_gateway *g, const char *topic, int32_t partition,
                      char owner_id[SL_MEMBERS_MAX_ID], char address[SL_MEMBERS_MAX_ADDRESS]) {
    return g->members && sl_members_owner(g->members, topic, partition, owner_id, address) == SL_OK;
}

size_t sl_gateway_standbys(sl_gateway *g, const char *topic, int32_t partition,
                           char (*ids)[SL_MEMBERS_MAX_ID], size_t max) {
    return g->members ? sl_members_standbys(g->members, topic, partition, ids, max) : 0;
}

bool sl_gateway_is_self(sl_gateway *g, const char *instance_id) {
    return strcmp(instance_id, sl_engine_instance_id(g->engine)) == 0;
}

sl_err sl_gateway_instance_get(sl_gateway *g, const char *address, const char *target,
                               sl_httpc_response *answer) {
    char hop[SL_TRUST_HOP_MAX], why[512];
    if (sl_trust_hop_sign(g->trust, "GET", target, NULL, 0, sl_clock_wall_ms() / 1000,
                          sl_engine_instance_id(g->engine), hop, sizeof(hop)))
        return SL_ERR_INVALID;
    sl_httpc_header headers[2] = {{SL_GATEWAY_HOP_HEADER, hop}};
    size_t n = 1;
    const char *trace = sl_trace_current();
    if (trace)
        headers[n++] = (sl_httpc_header){SL_TRACEPARENT_HEADER, trace};
    sl_err err =
        sl_httpc_request(address, "GET", target, headers, n, NULL, 0, g->forward_timeout_ms,
                         g->forward_max_bytes, answer, why, sizeof(why));
    if (err) {
        LOG(g, SL_LOG_WARN, "GET %.64s... from %s failed: %s", target, address, why);
        return err;
    }
    if (!open_answer(g, hop, address, answer)) {
        sl_httpc_response_free(answer);
        return SL_ERR_IO;
    }
    return SL_OK;
}

sl_err sl_gateway_routes(sl_gateway *g, sl_http_server *http, sl_http_server *admin) {
    sl_err err;
    if ((err = sl_gateway_store_routes(g, http, admin)))
        return err;
    sl_http_server_guard(http, hop_guard, g);
    if ((err = sl_http_route(admin, "GET", "/v1/members", members_route, g)) ||
        (err = sl_http_route(admin, "GET", "/v1/metadata/{store}/{key}", metadata_route, g)) ||
        (err = sl_http_route(http, "GET", "/v1/await/{store}/{key}/{ms}", await_route, g)) ||
        (err = sl_http_route(http, "GET", "/v1/await/{store}/{key}/{ms}/{needle}", await_route, g)))
        return err;
    return SL_OK;
}
