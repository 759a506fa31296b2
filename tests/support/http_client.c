/* http_client.c: the HTTP test client (see http_client.h). */
#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static _Thread_local char source_ip[INET_ADDRSTRLEN];

void test_http_source(const char *ip) {
    snprintf(source_ip, sizeof(source_ip), "%s", ip ? ip : "");
}

int test_http(int port, const char *method, const char *path, const char *extra_headers,
              const char *body, size_t body_len, char *headers, size_t headers_size,
              char *resp_body, size_t body_size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (source_ip[0]) {
        struct sockaddr_in from = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, source_ip, &from.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    char head[2048], length[64] = "";
    /* A chunked body carries its own framing: no Content-Length then. */
    if (!extra_headers || !strstr(extra_headers, "Transfer-Encoding"))
        snprintf(length, sizeof(length), "Content-Length: %zu\r\n", body_len);
    int head_len = snprintf(head, sizeof(head),
                            "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s\r\n",
                            method, path, extra_headers ? extra_headers : "", length);
    if (write(fd, head, (size_t)head_len) != head_len) {
        close(fd);
        return -1;
    }
    /* The server may answer (413) and close before the whole body is sent:
     * a short or failed write is not an error here. */
    for (size_t sent = 0; sent < body_len;) {
        ssize_t w = send(fd, body + sent, body_len - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    static _Thread_local char buf[1 << 16];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof(buf) - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return -1;
    char *split = strstr(buf, "\r\n\r\n");
    if (headers)
        snprintf(headers, headers_size, "%.*s", split ? (int)(split - buf) : (int)got, buf);
    if (resp_body && body_size) { /* bytes as sent, NULs too (a sealed body) */
        size_t len = split ? got - (size_t)(split + 4 - buf) : 0;
        if (len > body_size - 1)
            len = body_size - 1;
        if (len)
            memcpy(resp_body, split + 4, len);
        resp_body[len] = '\0';
    }
    return status;
}

test_answer *test_http_call(int port, const char *method, const char *path, const char *headers,
                            const char *body, size_t body_len) {
    test_answer *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->status = test_http(port, method, path, headers, body, body_len, a->headers,
                          sizeof(a->headers), a->body, sizeof(a->body));
    json_error_t jerr;
    a->json = a->body[0] ? json_loads(a->body, 0, &jerr) : NULL;
    return a;
}

void test_answer_free(test_answer *a) {
    if (a)
        json_decref(a->json);
    free(a);
}

const char *test_answer_field(const test_answer *a, const char *name) {
    json_t *v = a->json ? json_object_get(a->json, name) : NULL;
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

void test_assert_error_shape(const test_answer *a, int status) {
    if (a->status != status)
        fail_msg("status %d, expected %d: %s", a->status, status, a->body);
    assert_non_null(a->json);
    assert_non_null(test_answer_field(a, "message"));
    assert_non_null(test_answer_field(a, "request_id"));
    json_t *code = json_object_get(a->json, "code");
    assert_true(json_is_integer(code));
    assert_int_equal(json_integer_value(code), status);
}

long long test_http_metric(int port, const char *series) {
    static _Thread_local char body[1 << 17];
    if (test_http(port, "GET", "/metrics", NULL, NULL, 0, NULL, 0, body, sizeof(body)) != 200)
        return -1;
    size_t len = strlen(series);
    for (const char *line = body; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            return strtoll(line + len + 1, NULL, 10);
    return -1;
}
