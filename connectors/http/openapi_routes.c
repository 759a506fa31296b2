/*
 * openapi_routes.c: serve the compiled-in OpenAPI document (see
 * openapi_routes.h).
 */
#include "connectors/http/openapi_routes.h"

/* Generated from schemas/openapi.yaml by the Makefile. */
extern const unsigned char sl_openapi_document[];
extern const size_t sl_openapi_document_len;

const char *sl_openapi_json(size_t *len) {
    *len = sl_openapi_document_len;
    return (const char *)sl_openapi_document;
}

/* Cache-Control is the server's (no-store, as for every answer): the
 * document changes with the binary, and it is small. */
static void handle_openapi(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    (void)req;
    size_t len = 0;
    const char *json = sl_openapi_json(&len);
    if (sl_http_respond(resp, 200, "application/json", json, len))
        sl_http_respond_error(resp, 500, "out of memory");
}

sl_err sl_openapi_routes(sl_http_server *http) {
    return sl_http_route(http, "GET", "/openapi.json", handle_openapi, NULL);
}
