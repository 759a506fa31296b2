/*
 * metrics.h: the registry of processor/base/metrics.h served over HTTP.
 * The registry knows nothing of HTTP; this is the one place where the two
 * meet, so base stays below http in the include order.
 */
#ifndef SLUICE_HTTP_METRICS_H
#define SLUICE_HTTP_METRICS_H

#include "processor/base/metrics.h"
#include "processor/http/server.h"

/* An sl_http_handler for GET /metrics; `opaque` is the sl_metrics* (borrowed,
 * must outlive the server). Answers 200 with SL_METRICS_CONTENT_TYPE, or a
 * JSON 500 (sl_http_respond_error) if rendering runs out of memory. Runs on
 * an HTTP worker thread. */
void sl_metrics_http_handler(void *opaque, const sl_http_request *req, sl_http_response *resp);

#endif
