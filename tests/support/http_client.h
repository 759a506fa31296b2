/*
 * http_client.h: the HTTP test client: a minimal blocking HTTP/1.1 client
 * (one request, Connection: close) and, on top of it, answers with their
 * JSON body parsed, for the tests that speak to sluice's routes.
 *
 * Runs on the caller's thread; test_http keeps a thread-local buffer, so
 * threads may call it at once.
 */
#ifndef SLUICE_TEST_HTTP_CLIENT_H
#define SLUICE_TEST_HTTP_CLIENT_H

#include <jansson.h>
#include <stddef.h>

/* Sends one request with Connection: close to 127.0.0.1:`port` and reads the
 * whole answer. Returns the status code (or -1), copies at most
 * body_size-1 bytes of body into `resp_body` and the raw header block into
 * `headers` (either may be NULL). */
int test_http(int port, const char *method, const char *path, const char *extra_headers,
              const char *body, size_t body_len, char *headers, size_t headers_size,
              char *resp_body, size_t body_size);

/* From now on this thread's requests leave from `ip` (a loopback address
 * such as "127.0.0.2": another client address to the server, with its own
 * per-address buckets); NULL: the default (127.0.0.1). */
void test_http_source(const char *ip);

/* One answer, its body parsed as JSON when it is JSON. */
typedef struct test_answer {
    int status;
    char headers[4096];
    char body[65536];
    json_t *json; /* the body parsed, or NULL */
} test_answer;

/* Send one request (see test_http) and return the answer; the caller owns
 * it (test_answer_free). Fails the test when out of memory. */
test_answer *test_http_call(int port, const char *method, const char *path, const char *headers,
                            const char *body, size_t body_len);

/* Free an answer (NULL is fine). */
void test_answer_free(test_answer *a);

/* The string field `name` of the JSON body, or NULL; borrowed from `a`. */
const char *test_answer_field(const test_answer *a, const char *name);

/* Fail the test unless `a` has `status` and the error shape of the API
 * ({"message", "request_id", "code": status}). */
void test_assert_error_shape(const test_answer *a, int status);

/* The value of a series in the /metrics of the server on `port`, or -1.
 * `series` is the name with its labels as exposed: `name` or
 * `name{label="value"}`. */
long long test_http_metric(int port, const char *series);

#endif
