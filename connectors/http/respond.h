/*
 * respond.h: the answers every HTTP API route module (identity_routes,
 * dialogs_routes) gives the same way: a JSON body, and the 503 for a
 * command that went through the reply path without an outcome.
 *
 * Errors go through sl_gateway_error ({"message", "code", "request_id"},
 * logged with the request id). Any HTTP thread.
 */
#ifndef SLUICE_CONNECTORS_HTTP_RESPOND_H
#define SLUICE_CONNECTORS_HTTP_RESPOND_H

#include <jansson.h>

#include "processor/base/error.h"
#include "processor/gateway/gateway.h"
#include "processor/http/server.h"

/* Retry-After, in seconds, of every 503 the API routes answer. */
#define SL_RESPOND_RETRY_AFTER_S 1

/* Answer `root` (taken; NULL means out of memory) as compact JSON with
 * `status`, or a 500 when it cannot be encoded. The text is wiped before it
 * is freed: it may hold tokens. */
void sl_respond_json(sl_gateway *gateway, const sl_http_request *req, sl_http_response *resp,
                     int status, json_t *root);

/* Answer a command that sl_replies_request did not get an outcome for with
 * a 503 + Retry-After: `timeout_message` for SL_ERR_TIMEOUT (the command may
 * still be applied: tell the client to retry with its Idempotency-Key),
 * "too many requests in flight" for SL_ERR_FULL, `failed_message` for any
 * other error. */
void sl_respond_unanswered(sl_gateway *gateway, const sl_http_request *req,
                           sl_http_response *resp, sl_err err, const char *timeout_message,
                           const char *failed_message);

#endif
