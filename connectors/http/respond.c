/*
 * respond.c: JSON answers and the 503s of the HTTP API routes. See
 * respond.h.
 */
#include "connectors/http/respond.h"

#include <stdlib.h>
#include <string.h>

void sl_respond_json(sl_gateway *gateway, const sl_http_request *req, sl_http_response *resp,
                     int status, json_t *root) {
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text || sl_http_respond_json(resp, status, text))
        sl_gateway_error(gateway, req, resp, 500, "out of memory", 0);
    if (text) {
        explicit_bzero(text, strlen(text)); /* it may hold tokens */
        free(text);
    }
}

void sl_respond_unanswered(sl_gateway *gateway, const sl_http_request *req,
                           sl_http_response *resp, sl_err err, const char *timeout_message,
                           const char *failed_message) {
    const char *message = err == SL_ERR_TIMEOUT ? timeout_message
                          : err == SL_ERR_FULL  ? "too many requests in flight"
                                                : failed_message;
    sl_gateway_error(gateway, req, resp, 503, message, SL_RESPOND_RETRY_AFTER_S);
}
