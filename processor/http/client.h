/*
 * httpc.h: a small blocking HTTP/1.1 client for instance-to-instance calls
 * (the gateway forwards a request for a key it does not own to the owner).
 *
 * HTTP/1.1 with kept-alive connections (a small process-wide pool per
 * address, see client.c), plain TCP, numeric or resolvable host.
 * Responses must be framed by Content-Length or by the end of the
 * connection; chunked responses are refused (sluice's server never sends
 * them for the bodies we forward). Everything is bounded: one
 * deadline covers connect, send and receive, and the response (headers and
 * body) is capped; a larger one is SL_ERR_FULL, never a bigger buffer.
 *
 * Threading: any thread; the pool of idle connections has its own lock.
 */
#ifndef SLUICE_HTTPC_H
#define SLUICE_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

#include "processor/base/error.h"

#define SL_HTTPC_MAX_HEADERS 16

typedef struct sl_httpc_header {
    const char *name;
    const char *value;
} sl_httpc_header;

typedef struct sl_httpc_response {
    int status;
    /* The response header block as received (NUL-terminated, malloc'd);
     * read single headers with sl_httpc_response_header. */
    char *head;
    char *body; /* malloc'd, NUL-terminated (not counted in body_len) */
    size_t body_len;
} sl_httpc_response;

/* Send `method` `path` to `address` ("host:port", IPv6 as "[::1]:port"),
 * with `headers` (n_headers entries, borrowed; at most
 * SL_HTTPC_MAX_HEADERS; names and values must not hold CR or LF) and
 * `body` (may be NULL). Waits at most timeout_ms in total and accepts at
 * most max_response_bytes of headers plus body. On SL_OK the caller owns
 * *response (free with sl_httpc_response_free). Errors: SL_ERR_TIMEOUT,
 * SL_ERR_FULL (response too large), SL_ERR_IO (connect refused, reset,
 * malformed response), SL_ERR_INVALID (bad arguments), SL_ERR_NOMEM. */
sl_err sl_httpc_request(const char *address, const char *method, const char *path,
                        const sl_httpc_header *headers, size_t n_headers, const void *body,
                        size_t body_len, int timeout_ms, size_t max_response_bytes,
                        sl_httpc_response *response, char *errstr, size_t errstr_size);

/* The value of header `name` (case-insensitive) copied into out (bounded,
 * leading and trailing blanks trimmed). Returns false if absent or if it
 * does not fit. */
bool sl_httpc_response_header(const sl_httpc_response *response, const char *name, char *out,
                              size_t out_size);

void sl_httpc_response_free(sl_httpc_response *response);

/* Idle connections kept for reuse (all addresses), for tests. */
size_t sl_httpc_idle_connections(void);
/* Close every idle connection (tests; a process that stops). */
void sl_httpc_close_idle(void);

#endif
