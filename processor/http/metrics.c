/* metrics.c: GET /metrics, the Prometheus text rendering of a registry. */
#include "processor/http/metrics.h"

#include <stdlib.h>

void sl_metrics_http_handler(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    char *text = NULL;
    size_t len = 0;
    if (sl_metrics_render(opaque, &text, &len) != SL_OK) {
        sl_http_respond_error(resp, 500, "cannot render metrics");
        return;
    }
    if (sl_http_respond(resp, 200, SL_METRICS_CONTENT_TYPE, text, len) != SL_OK)
        sl_http_respond_error(resp, 500, "cannot copy the metrics response: out of memory");
    free(text);
}
