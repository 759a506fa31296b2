/*
 * fuzz_http_request.c: whole HTTP requests, as raw bytes on a loopback
 * socket, into the server core (http.c over libmicrohttpd).
 *
 * One server is started on 127.0.0.1, port 0, at the first input and kept
 * for the process (starting one per input would dominate the run time); it
 * holds no per-request state once a connection is closed. Its routes mirror
 * the ones sluice and its tests register, and its handlers read everything a
 * request offers (params, query, headers, body). The body cap is small so
 * 413 paths are reached with small inputs.
 *
 * Per input: connect, send the bytes, half-close, read the reply until the
 * server closes, or REPLY_IDLE_MS pass without more of it, or no reply comes
 * within FIRST_REPLY_MS; then reset the connection (RST). libmicrohttpd
 * 0.9.75 often misses a FIN that arrives with the request (edge-triggered
 * epoll) and would keep the connection until its idle timeout, so waiting
 * for its close would cost seconds per input and pile up connections; the
 * RST is a fresh event it does notice. A crash, an ASan report or a hang
 * (the replay's timeout) in the server is the finding.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "processor/http/server.h"
#include "tests/fuzz/fuzz_http.h"

#define MAX_BODY_BYTES 1024
#define FIRST_REPLY_MS 250
#define REPLY_IDLE_MS  25

static sl_http_server *server; /* started once, see the top */

static void echo(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    size_t len;
    const char *body = sl_http_request_body(req, &len);
    sl_http_respond(resp, 200, "text/plain", body ? body : "", body ? len : 0);
}

static void user(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    char text[512];
    const char *limit = sl_http_request_query(req, "limit");
    const char *agent = sl_http_request_header(req, "User-Agent");
    snprintf(text, sizeof(text), "%s %s %s id=%s limit=%s agent=%s", sl_http_request_method(req),
             sl_http_request_path(req), sl_http_request_id(req), sl_http_request_param(req, "id"),
             limit ? limit : "", agent ? agent : "");
    sl_http_respond(resp, 200, "text/plain", text, strlen(text));
}

/* A 404 whose message carries the client's bytes: they need not be UTF-8,
 * which the JSON error body must survive. */
static void store_key(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    char message[256];
    snprintf(message, sizeof(message), "no key '%s' in store '%s'",
             sl_http_request_param(req, "key"), sl_http_request_param(req, "store"));
    sl_http_respond_error(resp, 404, message);
}

static void busy(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque, (void)req;
    sl_http_respond_error(resp, 503, "restoring");
    sl_http_response_retry_after(resp, 2);
}

static void silent(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque, (void)req, (void)resp;
}

static void stop_server(void) {
    sl_http_server_destroy(server);
    server = NULL;
}

static void start_server(void) {
    sl_http_options options = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 2,
                               .max_connections = 16,
                               .connection_timeout_s = 2,
                               .max_body_bytes = MAX_BODY_BYTES};
    char errstr[256];
    const sl_logger quiet = {.fn = NULL}; /* MHD warns about every bad request */
    server = sl_http_server_new(&options, &quiet, errstr, sizeof(errstr));
    FUZZ_CHECK(server != NULL);
    FUZZ_CHECK(sl_http_route(server, "GET", "/healthz", busy, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_route(server, "POST", "/echo", echo, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_route(server, "GET", "/user/get/{id}", user, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_route(server, "DELETE", "/user/get/{id}", user, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_route(server, "PUT", "/user/get/{id}", echo, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_route(server, "GET", "/v1/stores/{store}/keys/{key}", store_key, NULL) ==
               SL_OK);
    FUZZ_CHECK(sl_http_route(server, "GET", "/silent", silent, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_server_start(server, errstr, sizeof(errstr)) == SL_OK);
    atexit(stop_server);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!server)
        start_server();
    int fd = fuzz_http_send(sl_http_server_port(server), data, size);
    shutdown(fd, SHUT_WR);
    char reply[4096];
    long long deadline = now_ms() + FIRST_REPLY_MS;
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        if (recv(fd, reply, sizeof(reply), 0) <= 0)
            break;
        deadline = now_ms() + REPLY_IDLE_MS;
    }
    fuzz_http_reset(fd);
    return 0;
}
