/*
 * http.c: libmicrohttpd glue, routing, bounded bodies, JSON errors.
 *
 * Life of a request (MHD calls access_cb several times per request):
 *
 *   request line parsed            -> uri_cb allocates sl_http_request and
 *                                     notes the raw target's length and
 *                                     whether it holds control bytes
 *   first call (!req->started)     -> strict framing (check_head): 414 for
 *                                     an over-long target, 400 and close
 *                                     for an ambiguous or malformed head;
 *                                     if the declared Content-Length exceeds
 *                                     the cap, answer 413 at once (body
 *                                     never read)
 *   calls with upload data         -> append to the bounded body buffer; past
 *                                     the cap, drop data and remember it
 *   final call (no upload data)    -> 413 if the body overflowed, else route:
 *                                     404 / 405 / the handler's response
 *   completed_cb                   -> free the sl_http_request
 */
#include "processor/http/server.h"

#include "processor/base/clock.h"
#include "processor/base/trace.h"
#include "processor/http/server_int.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#define MAX_SEGMENTS 16

/* Longest request target (path and query, raw) we accept: longer gets 414.
 * Well below the per-connection memory so MHD never runs out first. */
#define MAX_TARGET_BYTES 8192

typedef struct route {
    char method[8];
    char *pattern;
    sl_http_handler *handler;
    void *opaque;
} route;

/* Absolute deadlines. MHD's connection timeout is an idle timeout: a
 * client that sends a header line (or a body byte) every few seconds keeps
 * its connection, and its thread, for as long as it likes (slowloris).
 * Every connection is tracked from MHD's connection notification with the
 * phase it is in and since when; a reaper thread shuts down the socket of
 * one whose head or body is late, and MHD then closes it. The reaper holds
 * the lock while it shuts a socket down, and MHD reports a connection
 * closed (which unlinks it under the lock) before it closes the socket, so
 * the descriptor is never one reused by another connection. */
typedef enum conn_phase {
    PHASE_HEAD, /* waiting for a request's head (from the connection's start
                   or the previous answer) */
    PHASE_BODY, /* the head arrived; reading the body */
    PHASE_BUSY, /* routed: the handler and the answer (no deadline here) */
} conn_phase;

typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    conn_phase phase;
    int64_t since_ms;
    bool cut;
} conn_track;

#define REAPER_TICK_MS 200

struct sl_http_server {
    sl_http_options options;
    pthread_mutex_t conns_lock;
    conn_track *conns;
    pthread_t reaper;
    bool reaper_running;
    atomic_bool stopping;
    atomic_uint_fast64_t cuts;
    char host[64];
    sl_logger logger;
    route routes[SL_HTTP_MAX_ROUTES];
    size_t n_routes;
    sl_http_guard *guard;
    void *guard_opaque;
    struct MHD_Daemon *daemon;
    int port;
    uint32_t id_prefix;
    atomic_uint_fast64_t next_id;
};

struct sl_http_request {
    sl_http_server *server;
    struct MHD_Connection *connection;
    const char *method;
    const char *path;
    char id[24];
    char traceparent[SL_TRACEPARENT_LEN + 1]; /* this request's span (dispatch) */
    char client_ip[INET6_ADDRSTRLEN];
    bool started;         /* access_cb has seen the request once */
    size_t target_len;    /* raw request target, from uri_cb */
    bool target_has_ctl;  /* a control byte in the raw target */
    char *body;
    size_t body_len, body_cap;
    bool body_too_large;
    bool answered;
    size_t n_params;
    const char *param_names[SL_HTTP_MAX_PARAMS];
    size_t param_name_lens[SL_HTTP_MAX_PARAMS];
    char *param_values[SL_HTTP_MAX_PARAMS];
};

struct sl_http_response {
    const sl_http_request *req;
    int status;
    char content_type[64];
    char *body;
    size_t body_len;
    int retry_after;
    char allow[64];
    sl_http_filter *filter; /* set by the guard; run by queue_closing */
    void *filter_opaque;
    /* Extra headers (sl_http_response_header): bounded, copied. */
    size_t n_extra;
    char extra_names[SL_HTTP_MAX_EXTRA_HEADERS][64];
    char extra_values[SL_HTTP_MAX_EXTRA_HEADERS][256];
};

/* The attribute lets clang check the vsnprintf below (-Wformat-nonliteral). */
static void __attribute__((format(printf, 2, 0))) mhd_log(void *cls, const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    sl_log(cls, SL_LOG_WARN, "http", "%s", line);
}

sl_http_server *sl_http_server_new(const sl_http_options *options, const sl_logger *logger,
                                   char *errstr, size_t errstr_size) {
    if (!options || !options->host || options->port < 0 || options->port > 65535 ||
        options->threads < 0 || options->max_connections < 1 ||
        options->max_connections_per_address < 0 || options->connection_timeout_s < 1 ||
        options->header_timeout_s < 0 || options->body_timeout_s < 0 ||
        options->max_body_bytes == 0) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "invalid HTTP server options");
        return NULL;
    }
    sl_http_server *server = calloc(1, sizeof(*server));
    if (!server) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (strlen(options->host) >= sizeof(server->host)) {
        free(server);
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "http.host too long");
        return NULL;
    }
    server->options = *options;
    pthread_mutex_init(&server->conns_lock, NULL);
    strcpy(server->host, options->host); /* length checked above */
    server->options.host = server->host;
    if (logger)
        server->logger = *logger;
    if (getrandom(&server->id_prefix, sizeof(server->id_prefix), 0) != sizeof(server->id_prefix))
        server->id_prefix = (uint32_t)time(NULL);
    return server;
}

static bool valid_pattern(const char *pattern) {
    if (pattern[0] != '/')
        return false;
    size_t segments = 0;
    for (const char *p = pattern; *p; p++)
        if (*p == '/')
            segments++;
    return segments <= MAX_SEGMENTS;
}

sl_err sl_http_route(sl_http_server *server, const char *method, const char *pattern,
                     sl_http_handler *handler, void *opaque) {
    if (!server || !method || !pattern || !handler || server->daemon ||
        strlen(method) >= sizeof(server->routes[0].method) || !valid_pattern(pattern))
        return SL_ERR_INVALID;
    if (server->n_routes == SL_HTTP_MAX_ROUTES)
        return SL_ERR_FULL;
    route *r = &server->routes[server->n_routes];
    r->pattern = strdup(pattern);
    if (!r->pattern)
        return SL_ERR_NOMEM;
    strcpy(r->method, method); /* length checked above */
    r->handler = handler;
    r->opaque = opaque;
    server->n_routes++;
    return SL_OK;
}

bool sl_http_server_route_at(const sl_http_server *server, size_t i, const char **method,
                             const char **pattern) {
    if (!server || i >= server->n_routes)
        return false;
    *method = server->routes[i].method;
    *pattern = server->routes[i].pattern;
    return true;
}

bool sl_http_match_pattern(const char *pattern, const char *path, size_t *n_params_out,
                           const char **names, size_t *name_lens, char **values) {
    size_t n_params = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return false;
        p++, s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen > 2 && p[0] == '{' && p[plen - 1] == '}') {
            if (slen == 0 || n_params == SL_HTTP_MAX_PARAMS)
                return false;
            names[n_params] = p + 1;
            name_lens[n_params] = plen - 2;
            n_params++;
        } else if (plen != slen || strncmp(p, s, plen) != 0) {
            return false;
        }
        p += plen, s += slen;
    }
    if (*p || *s)
        return false;
    /* Matched: copy the captured segments now that we know they are used. */
    p = pattern, s = path;
    size_t k = 0;
    while (*p) {
        p++, s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen > 2 && p[0] == '{' && p[plen - 1] == '}') {
            values[k] = strndup(s, slen);
            if (!values[k])
                return false;
            k++;
        }
        p += plen, s += slen;
    }
    *n_params_out = n_params;
    return true;
}

/* Match `path` against `pattern`; on success record {name} captures in req
 * (values are copies, names point into the pattern). */
static bool match(const char *pattern, const char *path, sl_http_request *req) {
    return sl_http_match_pattern(pattern, path, &req->n_params, req->param_names,
                                 req->param_name_lens, req->param_values);
}

static void free_params(sl_http_request *req) {
    for (size_t i = 0; i < SL_HTTP_MAX_PARAMS; i++) {
        free(req->param_values[i]);
        req->param_values[i] = NULL;
    }
    req->n_params = 0;
}

sl_err sl_http_respond(sl_http_response *resp, int status, const char *content_type,
                       const char *body, size_t body_len) {
    char *copy = malloc(body_len ? body_len : 1);
    if (!copy)
        return SL_ERR_NOMEM;
    if (body_len)
        memcpy(copy, body, body_len);
    free(resp->body);
    resp->body = copy;
    resp->body_len = body_len;
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", content_type);
    return SL_OK;
}

sl_err sl_http_respond_json(sl_http_response *resp, int status, const char *json) {
    return sl_http_respond(resp, status, "application/json", json, strlen(json));
}

sl_err sl_http_respond_error(sl_http_response *resp, int status, const char *message) {
    json_t *obj = json_pack("{s:s, s:i, s:s}", "message", message, "code", status, "request_id",
                            resp->req->id);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        return SL_ERR_NOMEM;
    sl_err err = sl_http_respond_json(resp, status, text);
    free(text);
    return err;
}

void sl_http_response_retry_after(sl_http_response *resp, int seconds) {
    resp->retry_after = seconds;
}

static enum MHD_Result queue_closing(sl_http_request *req, sl_http_response *resp, bool close);

static enum MHD_Result queue(sl_http_request *req, sl_http_response *resp) {
    return queue_closing(req, resp, false);
}

/* `close`: add "Connection: close", so MHD closes the connection after the
 * answer (a request whose framing we refused leaves the stream position
 * unknown, RFC 9112 6.3). */
static enum MHD_Result queue_closing(sl_http_request *req, sl_http_response *resp, bool close) {
    if (!resp->body)
        sl_http_respond_error(resp, 500, "handler produced no response");
    if (resp->filter) {
        sl_http_filter *filter = resp->filter;
        resp->filter = NULL; /* once, whatever it answers */
        filter(resp->filter_opaque, req, resp);
    }
    struct MHD_Response *mr = NULL;
    if (resp->body) {
        mr = MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_FREE);
        if (mr)
            resp->body = NULL; /* MHD owns it now */
    }
    free(resp->body);
    resp->body = NULL;
    if (!mr)
        return MHD_NO; /* out of memory: MHD closes the connection */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    bool own_cache_control = false; /* a route's own policy replaces the default */
    for (size_t i = 0; i < resp->n_extra; i++)
        own_cache_control |= strcasecmp(resp->extra_names[i], MHD_HTTP_HEADER_CACHE_CONTROL) == 0;
    if (!own_cache_control)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(mr, "X-Request-Id", req->id);
    if (req->traceparent[0]) /* W3C Trace Context Level 2: where to find our span */
        MHD_add_response_header(mr, "traceresponse", req->traceparent);
    if (resp->retry_after > 0) {
        char value[16];
        snprintf(value, sizeof(value), "%d", resp->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, value);
    }
    if (resp->allow[0])
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, resp->allow);
    for (size_t i = 0; i < resp->n_extra; i++)
        MHD_add_response_header(mr, resp->extra_names[i], resp->extra_values[i]);
    if (close)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(req->connection, (unsigned)resp->status, mr);
    MHD_destroy_response(mr);
    req->answered = true;
    return ok;
}

static enum MHD_Result answer_error(sl_http_request *req, int status, const char *message) {
    sl_http_response resp = {.req = req};
    if (sl_http_respond_error(&resp, status, message))
        return MHD_NO;
    return queue(req, &resp);
}

/* An error answer after which the connection is closed. */
static enum MHD_Result answer_error_and_close(sl_http_request *req, int status,
                                             const char *message) {
    sl_http_response resp = {.req = req};
    if (sl_http_respond_error(&resp, status, message))
        return MHD_NO;
    return queue_closing(req, &resp, true);
}

/* ---- strict framing (RFC 9112): what libmicrohttpd 0.9.75 lets through ----
 *
 * MHD has parsed the head when access_cb first runs, before any body byte
 * is read: its header list is what a handler would see. A proxy in front of
 * us may have read the same bytes differently, so anything ambiguous about
 * where this request's body ends, or about the head itself, is refused with
 * 400 and the connection closed, before any handler runs. */

typedef struct head_scan {
    int hosts, content_lengths, transfer_encodings;
    bool bad_name, bad_value, bad_content_length, bad_transfer_coding;
} head_scan;

/* RFC 9110 5.6.2 tchar */
static bool is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A control byte other than HTAB (bare CR, LF, NUL, DEL, ...). */
static bool has_ctl(const char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

static bool all_digits(const char *text, size_t len) {
    if (len == 0 || len > 19) /* 19 digits fit in 63 bits */
        return false;
    for (size_t i = 0; i < len; i++)
        if (text[i] < '0' || text[i] > '9')
            return false;
    return true;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size) {
    (void)kind;
    head_scan *scan = cls;
    if (key_size == 0)
        scan->bad_name = true;
    for (size_t i = 0; i < key_size; i++)
        if (!is_tchar((unsigned char)key[i]))
            scan->bad_name = true; /* "Content-Length : 5", control bytes */
    if (value && has_ctl(value, value_size))
        scan->bad_value = true;
    if (!value)
        value = "", value_size = 0;
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        scan->hosts++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        scan->content_lengths++;
        if (!all_digits(value, value_size))
            scan->bad_content_length = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        scan->transfer_encodings++;
        if (value_size != 7 || strncasecmp(value, "chunked", 7) != 0)
            scan->bad_transfer_coding = true;
    }
    return MHD_YES;
}

/* NULL if the head is acceptable, else the message of the 400 (or 414:
 * *status is set either way). */
static const char *check_head(const sl_http_request *req, struct MHD_Connection *connection,
                              int *status) {
    *status = 400;
    if (req->target_len > MAX_TARGET_BYTES) {
        *status = 414;
        return "request target too long";
    }
    if (req->target_has_ctl)
        return "control byte in the request target";
    head_scan scan = {0};
    MHD_get_connection_values_n(connection, MHD_HEADER_KIND, scan_header, &scan);
    if (scan.bad_name)
        return "malformed header name";
    if (scan.bad_value)
        return "control byte in a header value";
    if (scan.hosts > 1)
        return "more than one Host header";
    if (scan.content_lengths > 0 && scan.transfer_encodings > 0)
        return "Content-Length together with Transfer-Encoding";
    if (scan.content_lengths > 1 || scan.bad_content_length)
        return "malformed or repeated Content-Length";
    if (scan.transfer_encodings > 1 || scan.bad_transfer_coding)
        return "unsupported Transfer-Encoding (only chunked)";
    return NULL;
}

void sl_http_server_guard(sl_http_server *server, sl_http_guard *guard, void *opaque) {
    server->guard = guard;
    server->guard_opaque = opaque;
}

typedef struct trace_scan {
    int count;
    const char *value;
    size_t len;
} trace_scan;

static enum MHD_Result scan_trace(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size) {
    (void)kind, (void)key_size;
    trace_scan *scan = cls;
    if (strcasecmp(key, SL_TRACEPARENT_HEADER) == 0 && scan->count++ == 0) {
        scan->value = value;
        scan->len = value ? value_size : 0;
    }
    return MHD_YES;
}

/* This request's span: a child of the client's traceparent when it sent
 * exactly one valid one, else the root of a new trace. */
static void request_trace(sl_http_request *req) {
    trace_scan scan = {0};
    MHD_get_connection_values_n(req->connection, MHD_HEADER_KIND, scan_trace, &scan);
    sl_trace_child(scan.count == 1 ? scan.value : NULL, scan.len, req->traceparent);
}

static enum MHD_Result dispatch_traced(sl_http_request *req);

/* Route the request, on this thread, as part of its trace: log lines name
 * the trace, and commands produced carry it. */
static enum MHD_Result dispatch(sl_http_request *req) {
    request_trace(req);
    sl_trace_set_current(req->traceparent);
    enum MHD_Result result = dispatch_traced(req);
    sl_trace_set_current(NULL);
    return result;
}

static enum MHD_Result dispatch_traced(sl_http_request *req) {
    sl_http_server *server = req->server;
    bool path_known = false;
    sl_http_response resp = {.req = req};
    if (server->guard && server->guard(server->guard_opaque, req, &resp))
        return queue(req, &resp);
    for (size_t i = 0; i < server->n_routes; i++) {
        route *r = &server->routes[i];
        if (!match(r->pattern, req->path, req))
            continue;
        if (strcmp(r->method, req->method) != 0 &&
            !(strcmp(r->method, "GET") == 0 && strcmp(req->method, "HEAD") == 0)) {
            path_known = true;
            size_t used = strlen(resp.allow);
            snprintf(resp.allow + used, sizeof(resp.allow) - used, "%s%s", used ? ", " : "",
                     r->method);
            free_params(req);
            continue;
        }
        r->handler(r->opaque, req, &resp);
        enum MHD_Result result = queue(req, &resp);
        free_params(req);
        return result;
    }
    if (path_known) {
        sl_http_respond_error(&resp, 405, "method not allowed");
        return queue(req, &resp);
    }
    return answer_error(req, 404, "no such route");
}

/* A request for `connection`, with its id and peer address; `target` is the
 * raw request target (NULL if unknown). NULL when out of memory. */
static sl_http_request *request_new(sl_http_server *server, struct MHD_Connection *connection,
                                    const char *target) {
    sl_http_request *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->server = server;
    req->connection = connection;
    if (target) {
        req->target_len = strlen(target);
        req->target_has_ctl = has_ctl(target, req->target_len);
    }
    const union MHD_ConnectionInfo *peer =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = peer ? peer->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->client_ip,
                  sizeof(req->client_ip));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->client_ip,
                  sizeof(req->client_ip));
    uint64_t n = atomic_fetch_add(&server->next_id, 1);
    snprintf(req->id, sizeof(req->id), "%08x%012llx", server->id_prefix,
             (unsigned long long)(n & 0xffffffffffffULL));
    return req;
}

/* MHD_OPTION_URI_LOG_CALLBACK: runs once the request line is parsed, with
 * the raw target (before percent-decoding); the result becomes *con_cls. */
static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *connection) {
    return request_new(cls, connection, uri);
}

/* ---- deadlines (see conn_track) ------------------------------------------ */

static void notify_cb(void *cls, struct MHD_Connection *connection, void **socket_context,
                      enum MHD_ConnectionNotificationCode code) {
    sl_http_server *server = cls;
    conn_track *t = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = info ? calloc(1, sizeof(*t)) : NULL;
        *socket_context = t;
        if (!t)
            return; /* untracked: only MHD's idle timeout applies */
        t->fd = info->connect_fd;
        t->phase = PHASE_HEAD;
        t->since_ms = sl_clock_mono_ms();
        pthread_mutex_lock(&server->conns_lock);
        t->next = server->conns;
        if (server->conns)
            server->conns->prev = t;
        server->conns = t;
        pthread_mutex_unlock(&server->conns_lock);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && t) {
        pthread_mutex_lock(&server->conns_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            server->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&server->conns_lock);
        free(t);
        *socket_context = NULL;
    }
}

static void track_phase(sl_http_server *server, struct MHD_Connection *connection,
                        conn_phase phase) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = info ? info->socket_context : NULL;
    if (!t)
        return;
    pthread_mutex_lock(&server->conns_lock);
    t->phase = phase;
    t->since_ms = sl_clock_mono_ms();
    pthread_mutex_unlock(&server->conns_lock);
}

static void *reaper_main(void *arg) {
    sl_http_server *server = arg;
    int64_t head_ms = (int64_t)server->options.header_timeout_s * 1000;
    int64_t body_ms = (int64_t)server->options.body_timeout_s * 1000;
    while (!atomic_load(&server->stopping)) {
        usleep(REAPER_TICK_MS * 1000);
        int64_t now = sl_clock_mono_ms();
        unsigned cut = 0;
        pthread_mutex_lock(&server->conns_lock);
        for (conn_track *t = server->conns; t; t = t->next) {
            int64_t limit = t->phase == PHASE_HEAD ? head_ms : t->phase == PHASE_BODY ? body_ms : 0;
            if (limit > 0 && !t->cut && now - t->since_ms > limit) {
                shutdown(t->fd, SHUT_RDWR); /* MHD sees the end and closes it */
                t->cut = true;
                cut++;
            }
        }
        pthread_mutex_unlock(&server->conns_lock);
        if (cut) {
            atomic_fetch_add(&server->cuts, cut);
            sl_log(&server->logger, SL_LOG_INFO, "http",
                   "closed %u connection(s) whose request head or body was late", cut);
        }
    }
    return NULL;
}

uint64_t sl_http_server_deadline_cuts(const sl_http_server *server) {
    return atomic_load(&((sl_http_server *)server)->cuts);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    (void)version;
    sl_http_server *server = cls;
    sl_http_request *req = *con_cls;
    if (!req) { /* uri_cb could not allocate: last chance */
        req = request_new(server, connection, NULL);
        if (!req)
            return MHD_NO;
        *con_cls = req;
    }
    if (!req->started) {
        req->started = true;
        track_phase(server, connection, PHASE_BODY);
        req->connection = connection;
        req->method = method;
        req->path = url;
        int status;
        const char *refused = check_head(req, connection, &status);
        if (refused)
            return answer_error_and_close(req, status, refused);
        const char *declared = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (declared && strtoull(declared, NULL, 10) > server->options.max_body_bytes)
            return answer_error(req, 413, "request body too large");
        return MHD_YES;
    }
    req->method = method;
    req->path = url;
    if (req->answered) { /* 413 already queued: discard whatever still arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t chunk = *upload_data_size;
        *upload_data_size = 0;
        if (req->body_too_large || chunk > server->options.max_body_bytes - req->body_len) {
            req->body_too_large = true;
            return MHD_YES;
        }
        if (req->body_len + chunk > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 1024;
            while (cap < req->body_len + chunk)
                cap *= 2;
            if (cap > server->options.max_body_bytes)
                cap = server->options.max_body_bytes;
            char *grown = realloc(req->body, cap);
            if (!grown)
                return MHD_NO;
            req->body = grown;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload_data, chunk);
        req->body_len += chunk;
        return MHD_YES;
    }
    track_phase(server, connection, PHASE_BUSY);
    if (req->body_too_large)
        return answer_error(req, 413, "request body too large");
    return dispatch(req);
}

static void completed_cb(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
    (void)code;
    track_phase(cls, connection, PHASE_HEAD); /* the next request's head, if any */
    sl_http_request *req = *con_cls;
    if (!req)
        return;
    free_params(req);
    free(req->body);
    free(req);
    *con_cls = NULL;
}

sl_err sl_http_server_start(sl_http_server *server, char *errstr, size_t errstr_size) {
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    /* threads == 0: a thread per connection, so a handler that waits (a
     * password hash, the reply to a command) blocks only its own
     * connection. threads > 0: a fixed pool multiplexing connections with
     * epoll, for handlers that never block. */
    bool per_connection = server->options.threads == 0;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     (per_connection ? MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL
                                     : MHD_USE_EPOLL);
    /* The pool size only in pool mode (MHD warns about a size of 0). */
    struct MHD_OptionItem pool_options[3];
    size_t n_options = 0;
    if (!per_connection)
        pool_options[n_options++] = (struct MHD_OptionItem){
            MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)server->options.threads, NULL};
    /* Counted by MHD on accept: one address past its cap is closed at once,
     * so it cannot hold the whole connection limit (slowloris). */
    if (server->options.max_connections_per_address > 0)
        pool_options[n_options++] = (struct MHD_OptionItem){
            MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (intptr_t)server->options.max_connections_per_address, NULL};
    pool_options[n_options] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, server->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)server->options.port);
    } else if (inet_pton(AF_INET6, server->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)server->options.port);
        flags |= MHD_USE_IPv6;
    } else {
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                       "http.host '%s' is not a numeric IPv4 or IPv6 address", server->host);
    }
    server->daemon = MHD_start_daemon(
        flags, (uint16_t)server->options.port, NULL, NULL, access_cb, server,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &server->logger, /* first: see MHD docs */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_ARRAY, pool_options,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)server->options.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)server->options.connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_STRICT_FOR_CLIENT,
        (int)1, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, server, MHD_OPTION_URI_LOG_CALLBACK,
        uri_cb, server, MHD_OPTION_NOTIFY_CONNECTION, notify_cb, server, MHD_OPTION_END);
    if (!server->daemon)
        return sl_fail(errstr, errstr_size, SL_ERR_HTTP,
                       "cannot listen on %s:%d (port in use or address not local?)", server->host,
                       server->options.port);
    if ((server->options.header_timeout_s > 0 || server->options.body_timeout_s > 0) &&
        pthread_create(&server->reaper, NULL, reaper_main, server) == 0)
        server->reaper_running = true;
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info ? info->port : server->options.port;
    return SL_OK;
}

int sl_http_server_port(const sl_http_server *server) {
    return server->port;
}

void sl_http_server_destroy(sl_http_server *server) {
    if (!server)
        return;
    atomic_store(&server->stopping, true);
    if (server->reaper_running)
        pthread_join(server->reaper, NULL);
    if (server->daemon)
        MHD_stop_daemon(server->daemon); /* reports every connection closed */
    pthread_mutex_destroy(&server->conns_lock);
    for (size_t i = 0; i < server->n_routes; i++)
        free(server->routes[i].pattern);
    free(server);
}

const char *sl_http_request_method(const sl_http_request *req) {
    return req->method;
}
const char *sl_http_request_path(const sl_http_request *req) {
    return req->path;
}
const char *sl_http_request_traceparent(const sl_http_request *req) {
    return req->traceparent[0] ? req->traceparent : NULL;
}

const char *sl_http_request_id(const sl_http_request *req) {
    return req->id;
}

const char *sl_http_request_param(const sl_http_request *req, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 0; i < req->n_params; i++)
        if (req->param_name_lens[i] == len && strncmp(req->param_names[i], name, len) == 0)
            return req->param_values[i];
    return NULL;
}

const char *sl_http_request_query(const sl_http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

const char *sl_http_request_header(const sl_http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *sl_http_request_client_ip(const sl_http_request *req) {
    return req->client_ip[0] ? req->client_ip : NULL;
}

const char *sl_http_request_body(const sl_http_request *req, size_t *len) {
    *len = req->body_len;
    return req->body;
}

void sl_http_request_replace_body(sl_http_request *req, char *body, size_t len) {
    free(req->body);
    req->body = body;
    req->body_len = len;
    req->body_cap = len;
}

void sl_http_response_filter(sl_http_response *resp, sl_http_filter *filter, void *opaque) {
    resp->filter = filter;
    resp->filter_opaque = opaque;
}

const char *sl_http_response_body(const sl_http_response *resp, size_t *len) {
    *len = resp->body_len;
    return resp->body;
}

void sl_http_response_replace_body(sl_http_response *resp, char *body, size_t len) {
    free(resp->body);
    resp->body = body;
    resp->body_len = len;
}

sl_err sl_http_response_header(sl_http_response *resp, const char *name, const char *value) {
    if (!name[0] || strpbrk(name, "\r\n: ") || strpbrk(value, "\r\n") ||
        strlen(name) >= sizeof(resp->extra_names[0]) ||
        strlen(value) >= sizeof(resp->extra_values[0]))
        return SL_ERR_INVALID;
    for (size_t i = 0; i < resp->n_extra; i++)
        if (strcasecmp(resp->extra_names[i], name) == 0) { /* one value per name */
            snprintf(resp->extra_values[i], sizeof(resp->extra_values[0]), "%s", value);
            return SL_OK;
        }
    if (resp->n_extra >= SL_HTTP_MAX_EXTRA_HEADERS)
        return SL_ERR_FULL;
    snprintf(resp->extra_names[resp->n_extra], sizeof(resp->extra_names[0]), "%s", name);
    snprintf(resp->extra_values[resp->n_extra], sizeof(resp->extra_values[0]), "%s", value);
    resp->n_extra++;
    return SL_OK;
}

typedef struct query_builder {
    char *out;
    size_t size, len;
    bool overflow;
} query_builder;

static void query_append_escaped(query_builder *b, const char *text) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("-._~", *p);
        size_t need = plain ? 1 : 3;
        if (b->len + need >= b->size) {
            b->overflow = true;
            return;
        }
        if (plain) {
            b->out[b->len++] = (char)*p;
        } else {
            b->out[b->len++] = '%';
            b->out[b->len++] = hex[*p >> 4];
            b->out[b->len++] = hex[*p & 15];
        }
    }
}

static enum MHD_Result query_collect(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    query_builder *b = cls;
    if (b->len + 1 >= b->size) {
        b->overflow = true;
        return MHD_NO;
    }
    char separator = b->len == 0 ? '?' : '&';
    b->out[b->len++] = separator;
    query_append_escaped(b, key);
    if (value) {
        if (b->len + 1 >= b->size) {
            b->overflow = true;
            return MHD_NO;
        }
        b->out[b->len++] = '=';
        query_append_escaped(b, value);
    }
    b->out[b->len] = '\0';
    return b->overflow ? MHD_NO : MHD_YES;
}

sl_err sl_http_request_query_string(const sl_http_request *req, char *out, size_t out_size) {
    if (out_size == 0)
        return SL_ERR_FULL;
    out[0] = '\0';
    query_builder b = {.out = out, .size = out_size};
    MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, query_collect, &b);
    if (b.overflow) {
        out[0] = '\0';
        return SL_ERR_FULL;
    }
    out[b.len] = '\0';
    return SL_OK;
}
