/*
 * Integration tests: the OpenAPI document (schemas/openapi.yaml) describes
 * exactly what one `sluice run` serves, on each of its two listeners:
 *   - GET /openapi.json on the public listener answers the document as
 *     JSON (compiled into the binary); the admin listener does not serve it;
 *   - every route the server registers (the admin listener's GET
 *     /v1/routes lists both listeners') is a path + method of the document
 *     marked with that listener in `x-sluice-listeners`, and every path +
 *     method of the document is registered on each listener it names.
 *     Path templates compare with their parameter names erased
 *     ("/user/get/{id}" and "/user/get/{user_id}" are the same route);
 *   - the comparison itself reports a route missing from the document and
 *     a documented route nobody serves (fed a doctored document).
 * The document's validity as OpenAPI is tests/shell/test_openapi.sh's job.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "processor/http/client.h"
#include "tests/support/broker.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

/* The document is ~40 KiB today; room to grow before this needs raising. */
#define MAX_ANSWER_BYTES (1024 * 1024)
#define MAX_ROUTES       128
#define ROUTE_TEXT       192

static test_cluster cluster;

static int setup(void **state) {
    (void)state;
    if (!test_kafka_bootstrap())
        return 0;
    if (test_cluster_init(&cluster, "openapi", 1) != 0)
        return -1;
    return test_cluster_start(&cluster);
}

static int teardown(void **state) {
    (void)state;
    return test_cluster_stop(&cluster);
}

#define NEED_BROKER() test_skip_unless(cluster.started, TEST_NO_BROKER)

/* GET `path` from 127.0.0.1:`port`; fails the test unless the transport
 * worked. The caller frees the answer. */
static void get(int port, const char *path, sl_httpc_response *answer) {
    char address[32], why[256];
    snprintf(address, sizeof(address), "127.0.0.1:%d", port);
    sl_err err = sl_httpc_request(address, "GET", path, NULL, 0, NULL, 0, 10000, MAX_ANSWER_BYTES,
                                  answer, why, sizeof(why));
    if (err)
        fail_msg("GET %s on port %d: %s", path, port, why);
}

/* GET `path` and parse its 200 JSON answer (caller's, json_decref). */
static json_t *get_json(int port, const char *path) {
    sl_httpc_response answer;
    get(port, path, &answer);
    assert_int_equal(answer.status, 200);
    json_error_t error;
    json_t *doc = json_loadb(answer.body, answer.body_len, 0, &error);
    if (!doc)
        fail_msg("GET %s: not JSON: %s", path, error.text);
    sl_httpc_response_free(&answer);
    return doc;
}

/* ---- the comparison ------------------------------------------------------ */

/* "<listener> <METHOD> <path with every {name} as {}>" per route. */
typedef struct route_set {
    char items[MAX_ROUTES][ROUTE_TEXT];
    size_t n;
} route_set;

static void set_add(route_set *set, const char *listener, const char *method, const char *path) {
    assert_true(set->n < MAX_ROUTES);
    char *out = set->items[set->n++];
    size_t used = (size_t)snprintf(out, ROUTE_TEXT, "%s ", listener);
    for (const char *m = method; *m && used + 1 < ROUTE_TEXT; m++)
        out[used++] = (char)(*m >= 'a' && *m <= 'z' ? *m - 'a' + 'A' : *m);
    if (used + 1 < ROUTE_TEXT)
        out[used++] = ' ';
    bool in_param = false;
    for (const char *p = path; *p && used + 2 < ROUTE_TEXT; p++) {
        if (*p == '{') {
            in_param = true;
            out[used++] = '{';
            out[used++] = '}';
        } else if (*p == '}') {
            in_param = false;
        } else if (!in_param) {
            out[used++] = *p;
        }
    }
    out[used] = '\0';
}

static bool set_has(const route_set *set, const char *item) {
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->items[i], item) == 0)
            return true;
    return false;
}

/* The routes /v1/routes answers: {"public": [{"method", "path"}], "admin": ...}. */
static void served_routes(json_t *routes, route_set *out) {
    static const char *const listeners[] = {"public", "admin", NULL};
    for (const char *const *listener = listeners; *listener; listener++) {
        json_t *list = json_object_get(routes, *listener);
        assert_true(json_is_array(list));
        size_t i;
        json_t *route;
        json_array_foreach(list, i, route) {
            const char *method = json_string_value(json_object_get(route, "method"));
            const char *path = json_string_value(json_object_get(route, "path"));
            assert_non_null(method);
            assert_non_null(path);
            set_add(out, *listener, method, path);
        }
    }
}

static bool is_method(const char *key) {
    static const char *const methods[] = {"get",  "put",   "post",  "delete", "options",
                                          "head", "patch", "trace", NULL};
    for (const char *const *m = methods; *m; m++)
        if (strcmp(key, *m) == 0)
            return true;
    return false;
}

/* Every (listener, method, path) of the document; a path item without a
 * valid `x-sluice-listeners` fails the test. */
static void documented_routes(json_t *doc, route_set *out) {
    json_t *paths = json_object_get(doc, "paths");
    assert_true(json_is_object(paths));
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        json_t *listeners = json_object_get(item, "x-sluice-listeners");
        if (!json_is_array(listeners) || json_array_size(listeners) == 0)
            fail_msg("%s: no x-sluice-listeners", path);
        size_t i;
        json_t *listener;
        json_array_foreach(listeners, i, listener) {
            const char *name = json_string_value(listener);
            if (!name || (strcmp(name, "public") != 0 && strcmp(name, "admin") != 0))
                fail_msg("%s: x-sluice-listeners holds something but public and admin", path);
            const char *key;
            json_t *operation;
            json_object_foreach(item, key, operation) {
                if (is_method(key))
                    set_add(out, name, key, path);
            }
        }
    }
}

/* Print each item of `a` that `b` lacks under `label`; how many. */
static size_t report_missing(const route_set *a, const route_set *b, const char *label) {
    size_t missing = 0;
    for (size_t i = 0; i < a->n; i++)
        if (!set_has(b, a->items[i])) {
            print_message("# %s: %s\n", label, a->items[i]);
            missing++;
        }
    return missing;
}

/* Served but not documented, and documented but not served: the counts. */
static void compare(json_t *doc, json_t *routes, size_t *undocumented, size_t *unserved) {
    route_set *served = calloc(1, sizeof(*served));
    route_set *documented = calloc(1, sizeof(*documented));
    assert_non_null(served);
    assert_non_null(documented);
    served_routes(routes, served);
    documented_routes(doc, documented);
    *undocumented = report_missing(served, documented, "served but not in the document");
    *unserved = report_missing(documented, served, "in the document but not served");
    free(served);
    free(documented);
}

/* ---- tests --------------------------------------------------------------- */

static void the_document_is_served_as_json_on_the_public_listener(void **state) {
    (void)state;
    NEED_BROKER();
    test_instance *inst = &cluster.instances[0];
    sl_httpc_response answer;
    get(inst->http_port, "/openapi.json", &answer);
    assert_int_equal(answer.status, 200);
    char type[128];
    assert_true(sl_httpc_response_header(&answer, "Content-Type", type, sizeof(type)));
    assert_string_equal(type, "application/json");
    json_t *doc = json_loadb(answer.body, answer.body_len, 0, NULL);
    assert_non_null(doc);
    const char *version = json_string_value(json_object_get(doc, "openapi"));
    assert_non_null(version);
    assert_int_equal(strncmp(version, "3.", 2), 0);
    assert_true(json_is_object(json_object_get(doc, "paths")));
    json_decref(doc);
    sl_httpc_response_free(&answer);

    get(inst->admin_port, "/openapi.json", &answer);
    assert_int_equal(answer.status, 404);
    sl_httpc_response_free(&answer);
}

static void every_route_is_documented_and_every_documented_route_is_served(void **state) {
    (void)state;
    NEED_BROKER();
    test_instance *inst = &cluster.instances[0];
    json_t *doc = get_json(inst->http_port, "/openapi.json");
    json_t *routes = get_json(inst->admin_port, "/v1/routes");
    size_t undocumented = 0, unserved = 0;
    compare(doc, routes, &undocumented, &unserved);
    json_decref(doc);
    json_decref(routes);
    assert_int_equal(undocumented, 0);
    assert_int_equal(unserved, 0);
}

/* The check is only as good as its failures: a document that lacks a
 * served route and has one nobody serves must fail both ways. Needs no
 * broker. */
static void the_comparison_reports_both_kinds_of_mismatch(void **state) {
    (void)state;
    json_t *routes = json_pack("{s:[{s:s, s:s}, {s:s, s:s}], s:[{s:s, s:s}]}", "public", "method",
                               "GET", "path", "/user/get/{id}", "method", "POST", "path", "/login",
                               "admin", "method", "GET", "path", "/metrics");
    json_t *doc = json_pack("{s:s, s:{s:{s:[s], s:{}}, s:{s:[s], s:{}}, s:{s:[s], s:{}}}}",
                            "openapi", "3.0.3", "paths", "/user/get/{user_id}",
                            "x-sluice-listeners", "public", "get", "/metrics", "x-sluice-listeners",
                            "public", "get", "/dialogs", "x-sluice-listeners", "public", "get");
    assert_non_null(routes);
    assert_non_null(doc);
    size_t undocumented = 0, unserved = 0;
    compare(doc, routes, &undocumented, &unserved);
    /* Undocumented: POST /login, and /metrics on the admin listener.
     * Unserved: /metrics on the public listener, GET /dialogs.
     * /user/get/{id} matches despite the parameter's name. */
    assert_int_equal(undocumented, 2);
    assert_int_equal(unserved, 2);
    json_decref(routes);
    json_decref(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_document_is_served_as_json_on_the_public_listener),
        cmocka_unit_test(every_route_is_documented_and_every_documented_route_is_served),
        cmocka_unit_test(the_comparison_reports_both_kinds_of_mismatch),
    };
    return cmocka_run_group_tests_name("openapi", tests, setup, teardown);
}
