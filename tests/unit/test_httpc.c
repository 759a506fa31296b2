/* Unit tests: the instance-to-instance HTTP client against a local
 * listener that plays a scripted server (framing, split writes, oversized
 * answers, a server that never answers, refused connections). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "processor/http/client.h"

static char errstr[256];

/* A one-connection server: accepts, reads the request head (kept for the
 * test), writes each part of `script` in turn (separate send calls), then
 * waits `hold_ms` and closes. */
typedef struct server {
    int listen_fd;
    int port;
    const char *const *script;
    int hold_ms;
    char request[4096];
    pthread_t thread;
} server;

/* A listening socket on a free loopback port (*port). */
static int listen_loopback(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t alen = sizeof(addr);
    getsockname(fd, (struct sockaddr *)&addr, &alen);
    *port = ntohs(addr.sin_port);
    return fd;
}

static void *serve(void *arg) {
    server *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t len = 0;
    while (len < sizeof(s->request) - 1) {
        ssize_t n = recv(fd, s->request + len, sizeof(s->request) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        s->request[len] = '\0';
        char *end = strstr(s->request, "\r\n\r\n");
        /* the scripted requests carry at most a short body after the head */
        if (end && (strstr(s->request, "Content-Length: 0") ||
                    !strstr(s->request, "Content-Length") || strlen(end + 4) > 0))
            break;
    }
    for (const char *const *part = s->script; part && *part; part++) {
        send(fd, *part, strlen(*part), MSG_NOSIGNAL);
        usleep(2000);
    }
    if (s->hold_ms)
        usleep((useconds_t)s->hold_ms * 1000);
    close(fd);
    return NULL;
}

static void server_start(server *s, const char *const *script, int hold_ms) {
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->hold_ms = hold_ms;
    s->listen_fd = listen_loopback(&s->port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_join(server *s) {
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

static void address_of(const server *s, char *buf, size_t size) {
    snprintf(buf, size, "127.0.0.1:%d", s->port);
}

static void a_content_length_body_split_over_writes_is_read_whole(void **state) {
    (void)state;
    const char *const script[] = {"HTTP/1.1 200 OK\r\nContent-Ty",
                                  "pe: application/json\r\n",
                                  "Content-Length: 11\r\nX-Extra:  v \r\n\r\n{\"a\":",
                                  "12345}",
                                  "TRAILING-GARBAGE",
                                  NULL};
    server s;
    server_start(&s, script, 0);
    char address[64];
    address_of(&s, address, sizeof(address));
    sl_httpc_header headers[] = {{"X-Hop", "1"}};
    sl_httpc_response resp;
    assert_int_equal(sl_httpc_request(address, "GET", "/agg/k1", headers, 1, NULL, 0, 5000, 4096,
                                      &resp, errstr, sizeof(errstr)),
                     SL_OK);
    server_join(&s);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, 11);
    assert_string_equal(resp.body, "{\"a\":12345}");
    char value[64];
    assert_true(sl_httpc_response_header(&resp, "content-type", value, sizeof(value)));
    assert_string_equal(value, "application/json");
    assert_true(sl_httpc_response_header(&resp, "X-Extra", value, sizeof(value)));
    assert_string_equal(value, "v");
    assert_false(sl_httpc_response_header(&resp, "Retry-After", value, sizeof(value)));
    assert_non_null(strstr(s.request, "GET /agg/k1 HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "X-Hop: 1\r\n"));
    assert_null(strstr(s.request, "Connection: close")); /* kept alive */
    sl_httpc_response_free(&resp);
}

static void a_body_without_content_length_ends_with_the_connection(void **state) {
    (void)state;
    const char *const script[] = {"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n",
                                  "moving", NULL};
    server s;
    server_start(&s, script, 0);
    char address[64];
    address_of(&s, address, sizeof(address));
    sl_httpc_response resp;
    assert_int_equal(sl_httpc_request(address, "POST", "/x", NULL, 0, "{}", 2, 5000, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_OK);
    server_join(&s);
    assert_int_equal(resp.status, 503);
    assert_string_equal(resp.body, "moving");
    assert_non_null(strstr(s.request, "Content-Length: 2\r\n"));
    char value[16];
    assert_true(sl_httpc_response_header(&resp, "Retry-After", value, sizeof(value)));
    assert_string_equal(value, "1");
    sl_httpc_response_free(&resp);
}

static void an_oversized_response_is_refused(void **state) {
    (void)state;
    static char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    const char *const declared[] = {"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n", NULL};
    const char *const undeclared[] = {"HTTP/1.1 200 OK\r\n\r\n", big, big, NULL};
    const char *const *scripts[] = {declared, undeclared};
    for (int i = 0; i < 2; i++) {
        server s;
        server_start(&s, scripts[i], 0);
        char address[64];
        address_of(&s, address, sizeof(address));
        sl_httpc_response resp;
        assert_int_equal(sl_httpc_request(address, "GET", "/", NULL, 0, NULL, 0, 5000, 1024, &resp,
                                          errstr, sizeof(errstr)),
                         SL_ERR_FULL);
        assert_null(resp.body);
        server_join(&s);
    }
}

static void ambiguous_or_broken_framing_is_refused(void **state) {
    (void)state;
    const char *const chunked[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", NULL};
    const char *const two_lengths[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", NULL};
    const char *const short_body[] = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", NULL};
    const char *const not_http[] = {"SSH-2.0-OpenSSH\r\n\r\n", NULL};
    const char *const *scripts[] = {chunked, two_lengths, short_body, not_http};
    for (int i = 0; i < 4; i++) {
        server s;
        server_start(&s, scripts[i], 0);
        char address[64];
        address_of(&s, address, sizeof(address));
        sl_httpc_response resp;
        assert_int_equal(sl_httpc_request(address, "GET", "/", NULL, 0, NULL, 0, 5000, 4096, &resp,
                                          errstr, sizeof(errstr)),
                         SL_ERR_IO);
        server_join(&s);
    }
}

static void a_server_that_never_answers_times_out(void **state) {
    (void)state;
    const char *const script[] = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", NULL};
    server s;
    server_start(&s, script, 1500); /* holds the connection open past the timeout */
    char address[64];
    address_of(&s, address, sizeof(address));
    sl_httpc_response resp;
    assert_int_equal(sl_httpc_request(address, "GET", "/", NULL, 0, NULL, 0, 200, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_ERR_TIMEOUT);
    server_join(&s);
}

static void a_refused_connection_and_bad_arguments_are_errors(void **state) {
    (void)state;
    server s;
    server_start(&s, NULL, 0);
    char address[64];
    address_of(&s, address, sizeof(address));
    /* let the server take and drop its one connection, then close it */
    sl_httpc_response resp;
    sl_httpc_request(address, "GET", "/", NULL, 0, NULL, 0, 1000, 4096, &resp, errstr,
                     sizeof(errstr));
    server_join(&s);
    assert_int_equal(sl_httpc_request(address, "GET", "/", NULL, 0, NULL, 0, 1000, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_ERR_IO);
    sl_httpc_header evil[] = {{"X-A", "1\r\nX-Injected: 2"}};
    assert_int_equal(sl_httpc_request(address, "GET", "/", evil, 1, NULL, 0, 1000, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_httpc_request("no-port", "GET", "/", NULL, 0, NULL, 0, 1000, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_httpc_request(address, "GET", "/a b", NULL, 0, NULL, 0, 1000, 4096, &resp,
                                      errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
}

/* ---- kept-alive connections ------------------------------------------ */

/* A server that accepts connections until shut down and answers every GET
 * or POST head (no body) with 200 "ok"; with `drop_second`, it reads a
 * connection's second request and closes without answering (a peer that
 * died, or closed the idle connection, as the request was sent). */
typedef struct ka_server {
    int listen_fd, port;
    bool drop_second;
    int accepts, requests;
    pthread_t thread;
} ka_server;

static void *ka_serve(void *arg) {
    ka_server *s = arg;
    for (;;) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        s->accepts++;
        char buf[4096];
        size_t len = 0;
        int seen = 0;
        bool dropped = false;
        while (!dropped) {
            ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            char *end;
            while (!dropped && (end = strstr(buf, "\r\n\r\n")) != NULL) {
                size_t used = (size_t)(end - buf) + 4;
                memmove(buf, buf + used, len - used + 1);
                len -= used;
                if (++seen == 2 && s->drop_second) {
                    dropped = true;
                    break;
                }
                s->requests++;
                const char *answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                send(fd, answer, strlen(answer), MSG_NOSIGNAL);
            }
        }
        close(fd);
    }
}

static void ka_start(ka_server *s, bool drop_second) {
    memset(s, 0, sizeof(*s));
    s->drop_second = drop_second;
    s->listen_fd = listen_loopback(&s->port);
    assert_int_equal(pthread_create(&s->thread, NULL, ka_serve, s), 0);
}

static void ka_stop(ka_server *s) {
    sl_httpc_close_idle();             /* the server's reader sees the end */
    shutdown(s->listen_fd, SHUT_RDWR); /* its accept returns */
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

static sl_err ka_call(const ka_server *s, const char *method) {
    char address[64];
    snprintf(address, sizeof(address), "127.0.0.1:%d", s->port);
    sl_httpc_response resp;
    sl_err err = sl_httpc_request(address, method, "/k", NULL, 0, NULL, 0, 3000, 4096, &resp,
                                  errstr, sizeof(errstr));
    if (!err) {
        assert_int_equal(resp.status, 200);
        assert_string_equal(resp.body, "ok");
        sl_httpc_response_free(&resp);
    }
    return err;
}

/* Forwarding opened a connection (and a thread at the owner) per request:
 * now ten requests to one address share one connection. */
static void requests_to_one_address_share_a_kept_alive_connection(void **state) {
    (void)state;
    ka_server s;
    ka_start(&s, false);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ka_call(&s, "GET"), SL_OK);
    assert_int_equal(s.requests, 10);
    assert_int_equal(s.accepts, 1);
    assert_true(sl_httpc_idle_connections() >= 1);
    ka_stop(&s);
    assert_int_equal(sl_httpc_idle_connections(), 0);
}

/* The peer closes a kept-alive connection as the next request arrives: a
 * GET goes again on a new connection; a POST is not sent twice (it fails:
 * the peer may have acted on it), and the caller answers 503. */
static void a_dropped_reused_connection_retries_a_get_but_never_a_post(void **state) {
    (void)state;
    ka_server s;
    ka_start(&s, true);
    assert_int_equal(ka_call(&s, "GET"), SL_OK);
    assert_int_equal(ka_call(&s, "GET"), SL_OK); /* dropped, then again */
    assert_int_equal(s.accepts, 2);
    assert_int_equal(s.requests, 2);
    assert_int_equal(ka_call(&s, "POST"), SL_ERR_IO); /* dropped: no second try */
    assert_int_equal(s.accepts, 2);
    assert_int_equal(s.requests, 2);
    ka_stop(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_content_length_body_split_over_writes_is_read_whole),
        cmocka_unit_test(a_body_without_content_length_ends_with_the_connection),
        cmocka_unit_test(an_oversized_response_is_refused),
        cmocka_unit_test(ambiguous_or_broken_framing_is_refused),
        cmocka_unit_test(a_server_that_never_answers_times_out),
        cmocka_unit_test(a_refused_connection_and_bad_arguments_are_errors),
        cmocka_unit_test(requests_to_one_address_share_a_kept_alive_connection),
        cmocka_unit_test(a_dropped_reused_connection_retries_a_get_but_never_a_post),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
