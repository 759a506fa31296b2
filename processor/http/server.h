/*
 * http.h: the HTTP server core of a sluice instance (libmicrohttpd).
 *
 * Routes are registered before start: a method and a path pattern whose
 * segments are literal or "{name}" (one non-empty segment, readable with
 * sl_http_request_param). Handlers run on the server's worker threads, so
 * they must be thread-safe and must not block for long.
 *
 * Guards that the Debian libmicrohttpd (0.9.75) does not give by itself are
 * ours: framing is strict (RFC 9112: anything that could make a proxy in
 * front and us disagree on where a request ends gets 400 and a close, an
 * over-long target 414, before any handler), every request body is capped (a larger one gets 413 without being
 * buffered), connections are bounded in number (in all and per client
 * address), in per-connection memory and
 * in idle time (slow clients are dropped), unknown paths get a JSON 404 and a
 * known path with the wrong method a JSON 405. Every error body has the
 * shape {"message": ..., "code": <int>, "request_id": ...} of the public
 * spec's error schema.
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"
#include "processor/base/log.h"

typedef struct sl_http_server sl_http_server;
typedef struct sl_http_request sl_http_request;
typedef struct sl_http_response sl_http_response;

typedef struct sl_http_options {
    const char *host;         /* bind address, e.g. "127.0.0.1" */
    int port;                 /* 0 picks a free port */
    int threads;              /* 0: a thread per connection (handlers may block);
                                 n: a pool of n threads (handlers must not block) */
    int max_connections;      /* concurrent connections */
    int max_connections_per_address; /* concurrent connections from one client
                                        address; 0: no cap */
    int connection_timeout_s; /* idle / slow-client timeout */
    int header_timeout_s;     /* absolute: a request's head (request line and
                                 headers; after a keep-alive answer, the
                                 next one's) must arrive within this;
                                 0: no deadline */
    int body_timeout_s;       /* absolute: its body within this after the
                                 head; 0: no deadline */
    size_t max_body_bytes;    /* request bodies above this get 413 */
} sl_http_options;

#define SL_HTTP_MAX_ROUTES 64
#define SL_HTTP_MAX_PARAMS 4

/* Runs on a worker thread. Fill `resp` (with one of the sl_http_respond_*
 * calls); a handler that leaves it empty answers 500. `req` and `resp` are
 * borrowed for the duration of the call. */
typedef void sl_http_handler(void *opaque, const sl_http_request *req, sl_http_response *resp);

/* A stopped server. `options` is copied; `logger` is borrowed and must
 * outlive the server. NULL + errstr on bad options or no memory. */
sl_http_server *sl_http_server_new(const sl_http_options *options, const sl_logger *logger,
                                   char *errstr, size_t errstr_size);

/* Runs before routing for every request that passed the framing checks
 * (its body is read), on a worker thread. Return true after filling `resp`
 * to answer without routing (e.g. a refused credential); false to route.
 * It may replace the body the handler will see
 * (sl_http_request_replace_body) and set a filter on the answer
 * (sl_http_response_filter). */
typedef bool sl_http_guard(void *opaque, sl_http_request *req, sl_http_response *resp);

/* For a guard: the body routes see from now on (malloc'd, NUL-terminated,
 * len bytes without the NUL; the request takes it). */
void sl_http_request_replace_body(sl_http_request *req, char *body, size_t len);

/* Rewrites an answer's body (sl_http_response_body and
 * sl_http_response_replace_body) and headers just before it is sent,
 * whoever filled it (e.g. seals it for the instance that asked). */
typedef void sl_http_filter(void *opaque, const sl_http_request *req, sl_http_response *resp);
/* For a guard: run `filter` on this request's answer. */
void sl_http_response_filter(sl_http_response *resp, sl_http_filter *filter, void *opaque);
/* For a filter: the answer's body so far (NULL: none yet). */
const char *sl_http_response_body(const sl_http_response *resp, size_t *len);
/* For a filter: the body to send instead (malloc'd; the response takes it). */
void sl_http_response_replace_body(sl_http_response *resp, char *body, size_t len);

/* Connections closed because their head or body missed its deadline
 * (header_timeout_s, body_timeout_s) since start. Any thread. */
uint64_t sl_http_server_deadline_cuts(const sl_http_server *server);

/* Set the server's one guard (before start only). `opaque` is borrowed. */
void sl_http_server_guard(sl_http_server *server, sl_http_guard *guard, void *opaque);

/* Register a route (before start only). `opaque` is borrowed. SL_ERR_FULL
 * past SL_HTTP_MAX_ROUTES; SL_ERR_INVALID for a malformed pattern. */
sl_err sl_http_route(sl_http_server *server, const char *method, const char *pattern,
                     sl_http_handler *handler, void *opaque);

/* The i-th registered route, in registration order: true with *method and
 * *pattern (borrowed from the server, valid until it is destroyed), false
 * past the last. Routes are fixed once the server starts, so any thread may
 * call this after start; before start, only the thread registering them. */
bool sl_http_server_route_at(const sl_http_server *server, size_t i, const char **method,
                             const char **pattern);

/* Bind and start the worker threads. SL_ERR_HTTP + errstr if the address
 * cannot be bound (a port in use, say). */
sl_err sl_http_server_start(sl_http_server *server, char *errstr, size_t errstr_size);

/* The bound port (after start; useful with port 0). */
int sl_http_server_port(const sl_http_server *server);

/* Stop (waits for running handlers) and free. NULL is fine. */
void sl_http_server_destroy(sl_http_server *server);

/* Request accessors: all strings are borrowed from the request and valid
 * only during the handler call. Missing items are NULL. */
const char *sl_http_request_method(const sl_http_request *req);
const char *sl_http_request_path(const sl_http_request *req);
const char *sl_http_request_id(const sl_http_request *req);
/* The W3C traceparent of this request's span (a child of the client's
 * `traceparent` header when it sent one valid one, else a new trace); also
 * the thread's current trace while the handler runs, and answered as
 * `traceresponse`. NULL before the request is routed. */
const char *sl_http_request_traceparent(const sl_http_request *req);
const char *sl_http_request_param(const sl_http_request *req, const char *name);
const char *sl_http_request_query(const sl_http_request *req, const char *name);
const char *sl_http_request_header(const sl_http_request *req, const char *name);
/* The peer's numeric address ("127.0.0.1", "::1"), or NULL if unknown. It
 * is the TCP peer: behind a proxy, the proxy's address. */
const char *sl_http_request_client_ip(const sl_http_request *req);
/* The body (not NUL-terminated in general; *len receives its size). */
const char *sl_http_request_body(const sl_http_request *req, size_t *len);

/* Responses. The body is copied. SL_ERR_NOMEM if it cannot be. */
sl_err sl_http_respond(sl_http_response *resp, int status, const char *content_type,
                       const char *body, size_t body_len);
sl_err sl_http_respond_json(sl_http_response *resp, int status, const char *json);
/* {"message": message, "code": status, "request_id": <the request's id>} */
sl_err sl_http_respond_error(sl_http_response *resp, int status, const char *message);
/* Re-encode the request's query arguments ("?a=1&b=x%20y", or "" when
 * there are none) into out, e.g. to forward the request. SL_ERR_FULL if it
 * does not fit (out is then ""). */
sl_err sl_http_request_query_string(const sl_http_request *req, char *out, size_t out_size);

#define SL_HTTP_MAX_EXTRA_HEADERS 8

/* Set a response header (copied; name < 64 and value < 256 bytes, no CR,
 * LF or ':' in the name); a name set again keeps only the last value. SL_ERR_FULL past
 * SL_HTTP_MAX_EXTRA_HEADERS, SL_ERR_INVALID for a bad name or value. */
sl_err sl_http_response_header(sl_http_response *resp, const char *name, const char *value);

/* Adds Retry-After (with 503 and 429). */
void sl_http_response_retry_after(sl_http_response *resp, int seconds);

#endif
